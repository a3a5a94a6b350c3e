"""The four trackers behind `--report-to` (see trackers.py for what each receives), and `tracking`,
the reporter that logs to the asked-for ones. Each imports its package only when the run starts; local
files go inside the run directory unless the tracker's own environment variables say otherwise
(WANDB_MODE=offline, MLFLOW_TRACKING_URI, TRACKIO_DIR, ...)."""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
import os
import time
from typing import Any

from scoreflow.ui.trackers import (RunContext, Tracker, TrackingReporter, check_installed, env_or, histogram_counts,
                       tracker_dir)

PROJECT = "scoreflow"
_STATUS = {"finished": "FINISHED", "stopped": "FINISHED", "interrupted": "KILLED", "failed": "FAILED"}


def _text_table(columns: list[str], rows: list[list[Any]]) -> list[list[str]]:
    return [list(columns)] + [[str(v) for v in row] for row in rows]


class TensorBoardTracker(Tracker):
    """Event files in RUN/tensorboard, written with the tensorboard package alone (no torch or TF):
    scalars per section, classic histogram protos, the workflow table as a text-plugin 2-D tensor."""

    name = "tensorboard"

    def open(self, ctx: RunContext) -> None:
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self.logdir = tracker_dir(ctx, "tensorboard")
        self.writer = EventFileWriter(str(self.logdir), flush_secs=10)
        self._text("config", [["key", "value"]] + [[k, str(v)] for k, v in ctx.flat_config().items()], 0)

    def _write(self, summary: Any, step: int) -> None:
        from tensorboard.compat.proto import event_pb2

        self.writer.add_event(event_pb2.Event(wall_time=time.time(), step=step, summary=summary))

    def log(self, section: str, values: dict[str, float], step: int) -> None:
        from tensorboard.compat.proto import summary_pb2

        self._write(summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=f"{section}/{k}", simple_value=v)
                                               for k, v in values.items()]), step)

    def histogram(self, tag: str, values: list[float], step: int) -> None:
        from tensorboard.compat.proto import summary_pb2

        counts, edges = histogram_counts(values)
        histo = summary_pb2.HistogramProto(min=min(values), max=max(values), num=len(values), sum=sum(values),
                                           sum_squares=sum(v * v for v in values), bucket_limit=edges[1:],
                                           bucket=counts)
        self._write(summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, histo=histo)]), step)

    def table(self, tag: str, columns: list[str], rows: list[list[Any]], step: int) -> None:
        self._text(tag, _text_table(columns, [r[:-1] + [f"```\n{r[-1]}\n```"] for r in rows]), step)

    def _text(self, tag: str, cells: list[list[str]], step: int) -> None:
        from tensorboard.compat.proto import summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2

        shape = tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=len(cells)),
                                                       tensor_shape_pb2.TensorShapeProto.Dim(size=len(cells[0]))])
        tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, tensor_shape=shape,
                                        string_val=[c.encode("utf-8") for row in cells for c in row])
        meta = summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="text"))
        self._write(summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, metadata=meta, tensor=tensor)]),
                    step)

    def close(self, status: str) -> None:
        self.writer.close()


class WandbTracker(Tracker):
    """A W&B run in RUN/wandb (project $WANDB_PROJECT or scoreflow); WANDB_MODE=offline works without
    a network. Each section has its own step metric (`train/step`, `iteration/step`, ...)."""

    name = "wandb"

    def open(self, ctx: RunContext) -> None:
        import wandb

        os.environ.setdefault("WANDB_SILENT", "true")  # the dashboard owns the terminal
        self.wandb = wandb
        self.run = wandb.init(project=env_or("WANDB_PROJECT", PROJECT), name=ctx.name, dir=str(ctx.run_dir),
                              config=ctx.config, reinit="create_new", job_type="optimize")
        self.sections: set[str] = set()

    def _section(self, section: str) -> None:
        if section not in self.sections:
            self.sections.add(section)
            self.run.define_metric(f"{section}/step")
            self.run.define_metric(f"{section}/*", step_metric=f"{section}/step")

    def log(self, section: str, values: dict[str, float], step: int) -> None:
        self._section(section)
        self.run.log({**{f"{section}/{k}": v for k, v in values.items()}, f"{section}/step": step})

    def histogram(self, tag: str, values: list[float], step: int) -> None:
        section = tag.split("/")[0]
        self._section(section)
        counts, edges = histogram_counts(values)
        self.run.log({tag: self.wandb.Histogram(np_histogram=(counts, edges)), f"{section}/step": step})

    def table(self, tag: str, columns: list[str], rows: list[list[Any]], step: int) -> None:
        section = tag.split("/")[0]
        self._section(section)
        self.run.log({tag: self.wandb.Table(columns=columns, data=rows), f"{section}/step": step})

    def close(self, status: str) -> None:
        self.run.finish(exit_code=0 if status in ("finished", "stopped") else 1)


class MlflowTracker(Tracker):
    """An MLflow run in experiment $MLFLOW_EXPERIMENT_NAME (or scoreflow) of $MLFLOW_TRACKING_URI, by
    default a SQLite store in RUN/mlflow (view: mlflow ui --backend-store-uri sqlite:///RUN/mlflow/mlflow.db).
    Histograms and tables are JSON artifacts ({"columns", "data"}: what mlflow's log_table writes)."""

    name = "mlflow"

    def open(self, ctx: RunContext) -> None:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        for name in ("mlflow", "alembic"):  # schema migrations log at INFO on every new store
            logging.getLogger(name).setLevel(logging.WARNING)
        folder = tracker_dir(ctx, "mlflow")
        uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(folder / 'mlflow.db').resolve()}"
        self.client = MlflowClient(tracking_uri=uri)
        name = env_or("MLFLOW_EXPERIMENT_NAME", PROJECT)
        exp = self.client.get_experiment_by_name(name)
        artifacts = None if os.environ.get("MLFLOW_TRACKING_URI") else (folder / "artifacts").resolve().as_uri()
        exp_id = exp.experiment_id if exp else self.client.create_experiment(name, artifact_location=artifacts)
        self.run_id = self.client.create_run(exp_id, run_name=ctx.name,
                                             tags={"scoreflow.run_dir": str(ctx.run_dir.resolve())}).info.run_id
        params = [Param(k, str(v)[:6000]) for k, v in ctx.flat_config().items()]
        for i in range(0, len(params), 100):  # mlflow takes at most 100 parameters per batch
            self.client.log_batch(self.run_id, params=params[i:i + 100])

    def log(self, section: str, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(f"{section}/{k}", v, now, step) for k, v in values.items()])

    def histogram(self, tag: str, values: list[float], step: int) -> None:
        counts, edges = histogram_counts(values)
        self.client.log_dict(self.run_id, {"bin_edges": edges, "counts": counts, "values": values},
                             f"{tag}/step-{step}.json")

    def table(self, tag: str, columns: list[str], rows: list[list[Any]], step: int) -> None:
        self.client.log_dict(self.run_id, {"columns": columns, "data": rows}, f"{tag}/step-{step}.json")

    def close(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status=_STATUS.get(status, "FINISHED"))


class TrackioTracker(Tracker):
    """A Trackio run in project $TRACKIO_PROJECT (or scoreflow), stored locally in $TRACKIO_DIR (default
    ~/.cache/huggingface/trackio; view: trackio show). Each section carries its own step key."""

    name = "trackio"

    def open(self, ctx: RunContext) -> None:
        import trackio

        self.trackio = trackio
        wanted = {"project": env_or("TRACKIO_PROJECT", PROJECT), "name": ctx.name, "config": ctx.flat_config(),
                  "auto_log_cpu": False, "auto_log_gpu": False}
        accepted = inspect.signature(trackio.init).parameters
        with contextlib.redirect_stdout(io.StringIO()):  # it prints a banner; the dashboard owns the terminal
            self.run = trackio.init(**{k: v for k, v in wanted.items() if k in accepted})

    def log(self, section: str, values: dict[str, float], step: int) -> None:
        self.run.log({**{f"{section}/{k}": v for k, v in values.items()}, f"{section}/step": step})

    def histogram(self, tag: str, values: list[float], step: int) -> None:
        counts, edges = histogram_counts(values)
        hist = self.trackio.Histogram(np_histogram=(counts, edges))
        self.run.log({tag: hist, f"{tag.split('/')[0]}/step": step})

    def table(self, tag: str, columns: list[str], rows: list[list[Any]], step: int) -> None:
        self.run.log({tag: self.trackio.Table(columns=columns, data=rows), f"{tag.split('/')[0]}/step": step})

    def close(self, status: str) -> None:
        current = getattr(getattr(self.trackio, "context_vars", None), "current_run", None)
        with contextlib.redirect_stdout(io.StringIO()):
            if current is not None and current.get() is self.run:
                self.trackio.finish()  # also clears the current run, so that exit does not finish it again
            else:
                self.run.finish()


__all__ = ["TensorBoardTracker", "WandbTracker", "MlflowTracker", "TrackioTracker", "make_trackers", "tracking"]


def make_trackers(names: list[str]) -> list[Tracker]:
    check_installed(names)
    kinds = {"tensorboard": TensorBoardTracker, "wandb": WandbTracker, "mlflow": MlflowTracker,
             "trackio": TrackioTracker}
    return [kinds[n]() for n in dict.fromkeys(names)]  # a name given twice counts once


def tracking(names: list[str] | tuple[str, ...]) -> TrackingReporter | None:
    """The reporter that logs to the named trackers (None for none); a tracker whose package is
    missing is a UserError here, before a run directory is touched."""
    return TrackingReporter(make_trackers(list(names))) if names else None
