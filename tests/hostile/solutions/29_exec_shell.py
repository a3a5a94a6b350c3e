# attempts: exec a shell through os.execv and posix_spawn
import os
try:
    os.posix_spawn("/bin/sh", ["sh", "-c", "echo pwned > @OUTSIDE@/spawned"], {})
except Exception:
    pass
os.execv("/bin/sh", ["sh", "-c", "echo pwned > @OUTSIDE@/spawned"])
def add(a, b):
    return 0
