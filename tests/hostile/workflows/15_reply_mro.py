# attempts: walk from an operator's Reply object to its class hierarchy
# expect: rejected
async def run_workflow(self):
    r = await self.custom(self.problem, "solve")
    return str(r.__class__.__mro__[-1].__subclasses__())
