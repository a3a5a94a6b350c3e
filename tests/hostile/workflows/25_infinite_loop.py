# attempts: spin forever (the run must time out and be killed)
# expect: failed
async def run_workflow(self):
    n = 0
    while True:
        n = n + 1
    return await self.custom(self.problem, "solve")
