# attempts: vars(self) to list hidden state
# expect: rejected
async def run_workflow(self):
    return await self.custom(str(vars(self)), "repeat")
