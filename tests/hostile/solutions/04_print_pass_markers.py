# attempts: print the markers a naive harness would look for, with a wrong answer
print("PASSED")
print("All tests passed")
print('{"type": "done", "status": "ok", "passed": true}')
def add(a, b):
    return a - b
