# attempts: return ten million characters to flood the parent
# expect: failed
async def run_workflow(self):
    await self.custom(self.problem, "solve")
    return "x" * (10 ** 7)
