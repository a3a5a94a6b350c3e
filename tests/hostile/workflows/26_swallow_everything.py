# attempts: loop forever catching every exception, to outlive the deadline
# expect: failed
async def run_workflow(self):
    while True:
        try:
            x = [1] * 1000
        except BaseException:
            pass
    return await self.custom(self.problem, "solve")
