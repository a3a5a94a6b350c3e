# attempts: keep an operator awaitable without awaiting it, to inspect the pending object
# expect: rejected
async def run_workflow(self):
    pending = self.custom(self.problem, "solve")
    return str(pending.method) + await pending
