# attempts: a deeply nested list whose repr overflows the C stack
# expect: failed
async def run_workflow(self):
    x = []
    for i in range(3000000):
        x = [x]
    await self.custom(self.problem, "solve")
    return x
