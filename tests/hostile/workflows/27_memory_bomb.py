# attempts: allocate a terabyte string
# expect: failed
async def run_workflow(self):
    x = "a" * (10 ** 12)
    return await self.custom(x, "repeat")
