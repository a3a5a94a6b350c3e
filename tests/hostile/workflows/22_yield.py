# attempts: turn run_workflow into an async generator to confuse the driver
# expect: rejected
async def run_workflow(self):
    yield await self.custom(self.problem, "solve")
    yield "all tests passed"
