# attempts: sleep past the deadline
import time
time.sleep(3600)
def add(a, b):
    return a + b
