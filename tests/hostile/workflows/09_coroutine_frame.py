# attempts: create its own coroutine and walk cr_frame.f_back to the child's globals
# expect: rejected
async def run_workflow(self):
    c = run_workflow(self)
    g = c.cr_frame.f_back.f_globals
    return await self.custom(str(g), "repeat")
