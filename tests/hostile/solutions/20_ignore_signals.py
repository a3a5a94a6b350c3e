# attempts: ignore SIGTERM/SIGINT and keep running after the deadline
import signal
for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    try:
        signal.signal(s, signal.SIG_IGN)
    except Exception:
        pass
while True:
    pass
def add(a, b):
    return a + b
