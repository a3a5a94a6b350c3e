# attempts: a decorator replacing run_workflow by something else
# expect: rejected
@print
async def run_workflow(self):
    return await self.custom(self.problem, "solve")
