# attempts: str.format taken without calling it, on a field name built without a literal "__"
# expect: rejected
async def run_workflow(self):
    u = "_" + "_"
    f = str.format
    leak = f("{0." + u + "class" + u + "." + u + "init" + u + "." + u + "globals" + u + "}", self)
    return await self.custom(leak, "repeat")
