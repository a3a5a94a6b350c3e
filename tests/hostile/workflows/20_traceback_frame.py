# attempts: the traceback of a caught exception to reach frames
# expect: rejected
async def run_workflow(self):
    try:
        1 / 0
    except Exception as e:
        f = e.__traceback__.tb_frame
        return await self.custom(str(f.f_back.f_locals), "repeat")
