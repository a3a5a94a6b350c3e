# attempts: a huge integer power to burn CPU
# expect: failed
async def run_workflow(self):
    x = 7 ** (10 ** 10)
    return await self.custom(str(x % 10), "repeat")
