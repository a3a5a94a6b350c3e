# attempts: allocate 10 GB
x = bytearray(10 ** 10)
def add(a, b):
    return 0
