# attempts: read a gold answer off self
# expect: rejected
async def run_workflow(self):
    await self.custom(self.problem, "solve")
    return self.answer
