# attempts: write files outside the temporary directory (a sibling folder, the repo, /tmp)
import os
for path in ("@OUTSIDE@/pwned.txt", "@OUTSIDE@/sentinel.txt", "@REPO@/hostile-canary.txt",
             "/tmp/hostile-canary.txt", "../hostile-canary.txt"):
    try:
        with open(path, "w") as f:
            f.write("pwned")
    except Exception as e:
        print("blocked", type(e).__name__)
for path in ("@OUTSIDE@/sentinel.txt",):
    try:
        os.remove(path)
    except Exception:
        pass
    try:
        os.rename(path, "stolen.txt")
    except Exception:
        pass
def add(a, b):
    return 0
