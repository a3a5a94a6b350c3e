# attempts: eval of a string that imports os
# expect: rejected
async def run_workflow(self):
    x = eval("open('@DATASET@').read()")
    return await self.custom(x, "repeat")
