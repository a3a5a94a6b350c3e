# attempts: a default argument that runs code at definition time
# expect: rejected
async def run_workflow(self, os=__import__("os")):
    return await self.custom(str(os.environ), "repeat")
