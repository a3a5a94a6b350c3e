# attempts: a lambda's __globals__ to reach builtins
# expect: rejected
async def run_workflow(self):
    b = (lambda: 0).__globals__["__builtins__"]
    return await self.custom(str(b), "repeat")
