# attempts: read API keys from the environment and from parent processes' /proc environ
import os
print(dict(os.environ))
for path in ("/proc/self/environ", "/proc/@PARENT_PID@/environ", "/proc/1/environ",
             "/proc/@PARENT_PID@/cmdline", "/proc/@PARENT_PID@/mem"):
    try:
        print(open(path, "rb").read(4096))
    except Exception as e:
        print("blocked", path, type(e).__name__)
def add(a, b):
    return 0
