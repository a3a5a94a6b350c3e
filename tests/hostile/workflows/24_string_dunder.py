# attempts: smuggle a dunder name in a string constant for later lookup
# expect: rejected
async def run_workflow(self):
    name = "__class__"
    return await self.custom(name, "repeat")
