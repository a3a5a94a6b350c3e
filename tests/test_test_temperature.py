"""`generator.test_temperature`: evaluation and `solve` generate their one workflow per problem at it
(0 = greedy), optimisation samples at `generator.temperature`, and a retry of an invalid workflow
samples at `generator.temperature` (a greedy retry would only repeat itself)."""

from __future__ import annotations

from fake_backend import FakeBackend
from test_solve import config

from scoreflow import api


class GreedyWritesInvalid(FakeBackend):
    """Logs the temperature of every generator call; a greedy call writes an invalid workflow."""

    def __init__(self) -> None:
        super().__init__()
        self.temperatures: list[float] = []

    def generate(self, prompts, params, *, adapter: bool = True):
        if not adapter:
            return super().generate(prompts, params, adapter=adapter)
        self.temperatures += [params.temperature] * len(prompts)
        out = super().generate(prompts, params, adapter=adapter)
        if params.temperature == 0:
            for c in out:
                c.text = "<graph>\nasync def run_workflow(self):\n    return 'no operator'\n</graph>"
        return out


def test_evaluation_and_solve_generate_at_the_test_temperature_and_retry_at_the_sampling_one(tmp_path, monkeypatch):
    backend = GreedyWritesInvalid()
    monkeypatch.setattr("scoreflow.run.session.make_backend", lambda cfg: backend)
    cfg = config(tmp_path)
    cfg["run"].update(compare=True, test_problems=2)
    cfg["generator"].update(temperature=0.7, test_temperature=0.0, max_attempts=2)
    result = api.optimize(cfg, tmp_path / "run")
    assert result.status == "finished"
    # base evaluation: 2 greedy (invalid) then 2 retries; optimisation: 2 problems x k=2; trained evaluation likewise
    assert backend.temperatures == [0.0, 0.0, 0.7, 0.7] + [0.7] * 4 + [0.0, 0.0, 0.7, 0.7]
    evaluations = [m for m in result.metrics if m["kind"] == "evaluate"]
    assert [m["valid_rate"] for m in evaluations] == [1.0, 1.0]  # every problem valid at its retry

    backend.temperatures.clear()
    with api.Solver.from_run(tmp_path / "run") as solver:
        solved = solver.solve("What do bees make?")
    assert solved.attempts == 2 and backend.temperatures == [0.0, 0.7]

    backend.temperatures.clear()
    with api.Solver.from_run(tmp_path / "run") as solver:
        solver.cfg.generator.test_temperature = 0.4  # sampled: valid at once
        assert solver.solve("What do bees make?").attempts == 1
    assert backend.temperatures == [0.4]
