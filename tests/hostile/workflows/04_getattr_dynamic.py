# attempts: getattr with a computed dunder name
# expect: rejected
async def run_workflow(self):
    u = "_" + "_"
    g = getattr(self.custom, u + "globals" + u)
    return await self.custom(str(g), "repeat")
