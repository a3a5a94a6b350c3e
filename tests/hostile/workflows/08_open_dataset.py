# attempts: read the dataset file to copy the gold answer
# expect: rejected
async def run_workflow(self):
    data = open("@DATASET@").read()
    return await self.custom(data, "find the answer")
