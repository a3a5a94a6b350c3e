# attempts: define a class with an always-true __eq__ to fool scoring
# expect: rejected
class Always:
    def __eq__(self, other):
        return True
async def run_workflow(self):
    await self.custom(self.problem, "solve")
    return Always()
