"""scoreflow: optimise LLM agent workflows by training the model that writes them (ScoreFlow)."""

from scoreflow.api import Solver, evaluate, optimize

__all__ = ["Solver", "evaluate", "optimize"]
