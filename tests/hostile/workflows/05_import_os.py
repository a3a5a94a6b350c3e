# attempts: import os and run a shell command
# expect: rejected
async def run_workflow(self):
    import os
    os.system("touch @OUTSIDE@/pwned")
    return await self.custom(self.problem, "solve")
