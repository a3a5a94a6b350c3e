# attempts: breakpoint()/help()/input() to reach the debugger or stdin
# expect: rejected
async def run_workflow(self):
    breakpoint()
    return await self.custom(input(), "repeat")
