# attempts: rebind a global of the harness
# expect: rejected
async def run_workflow(self):
    global send
    send = None
    return await self.custom(self.problem, "solve")
