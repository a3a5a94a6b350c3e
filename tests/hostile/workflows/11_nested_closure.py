# attempts: a nested function whose closure cells and globals are then inspected
# expect: rejected
async def run_workflow(self):
    secret = self.problem
    def inner():
        return secret
    cells = inner.__closure__
    return await self.custom(str(cells), "repeat")
