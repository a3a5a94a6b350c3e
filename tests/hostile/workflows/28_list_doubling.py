# attempts: grow a list exponentially until memory runs out
# expect: failed
async def run_workflow(self):
    xs = [0]
    while True:
        xs = xs + xs
    return await self.custom(self.problem, "solve")
