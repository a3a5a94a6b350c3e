# attempts: send a 100 MB operator argument through the channel
# expect: failed
async def run_workflow(self):
    return await self.custom("a" * (10 ** 8), "repeat")
