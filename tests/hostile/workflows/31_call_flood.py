# attempts: call the executor without end to run up cost
# expect: failed
async def run_workflow(self):
    while True:
        await self.custom(self.problem, "solve again")
    return "never"
