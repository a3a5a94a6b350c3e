# attempts: reach os through object.__subclasses__() from a tuple's class
# expect: rejected
async def run_workflow(self):
    for cls in ().__class__.__bases__[0].__subclasses__():
        if cls.__name__ == "_wrap_close":
            return cls.__init__.__globals__["system"]("id")
    return await self.custom(self.problem, "solve")
