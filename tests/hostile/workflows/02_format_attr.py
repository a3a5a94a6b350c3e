# attempts: read attributes through a str.format field ("{0.__class__}")
# expect: rejected
async def run_workflow(self):
    leak = "{0.__class__.__init__.__globals__}".format(self)
    return await self.custom(leak, "repeat")
