# attempts: an operator method's __globals__ (the sandbox child's module)
# expect: rejected
async def run_workflow(self):
    g = self.custom.__globals__
    return await self.custom(str(g["os"].environ), "repeat")
