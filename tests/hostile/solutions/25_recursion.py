# attempts: raise the recursion limit and recurse until the C stack overflows
import sys
try:
    sys.setrecursionlimit(10 ** 8)
except Exception:
    pass
def add(a, b):
    return add(a, b) + 1
