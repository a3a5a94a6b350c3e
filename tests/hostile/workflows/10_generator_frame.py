# attempts: a generator expression's gi_frame.f_back to reach the harness frame
# expect: rejected
async def run_workflow(self):
    gen = (x for x in [1])
    up = gen.gi_frame.f_back.f_back.f_locals
    return await self.custom(str(up), "repeat")
