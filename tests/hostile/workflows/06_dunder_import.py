# attempts: __import__ to get os
# expect: rejected
async def run_workflow(self):
    os = __import__("os")
    return await self.custom(str(os.environ), "repeat")
