# attempts: type(self).mro() then object's subclasses
# expect: rejected
async def run_workflow(self):
    base = type(self).mro()[-1]
    return await self.custom(str(base), "repeat")
