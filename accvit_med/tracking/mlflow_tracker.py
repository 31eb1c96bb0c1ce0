"""``--track mlflow``: params, per-epoch metrics, tags and the run's files in an MLflow run.

Where: ``MLFLOW_TRACKING_URI``, by default ``sqlite:///mlflow.db`` in the working folder (works
offline, no server; ``mlflow ui --backend-store-uri sqlite:///mlflow.db`` shows it). Experiment:
``ACCVIT_MED_MLFLOW_EXPERIMENT`` (``sweep`` sets it to its plan, one experiment per plan), else
``accvit-med/<dataset>``. The MLflow run's id is kept in ``<run>/mlflow.json``, so ``--resume``
continues the same MLflow run on the same tracking server.

Requests to a server are not retried: a server that is down would otherwise stall each epoch for
minutes of back-off, and :class:`..base.SafeTracker` turns the first failure into one warning.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Optional, Sequence

from accvit_med.fileio import atomic_write_json
from accvit_med.tracking.base import EXPERIMENT_ENV, flat_params, scalar_items

ID_FILE = "mlflow.json"


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def git_commit() -> Optional[str]:
    """The commit of the working folder's git checkout, if it is one."""
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


class MLflowTracker:
    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.client = None
        self.run_id: Optional[str] = None
        self.epoch = 0

    def on_fit_start(self, record: dict) -> None:
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        uri = tracking_uri()
        self.client = MlflowClient(tracking_uri=uri)
        stored = self._stored(uri)
        params = flat_params(record.get("recipe", {}))
        if stored is not None:  # --resume: the same MLflow run; params it has already are kept
            self.run_id = stored
            logged = self.client.get_run(self.run_id).data.params
            params = {k: v for k, v in params.items() if k not in logged}
            self.client.update_run(self.run_id, status="RUNNING")
            self.client.set_tag(self.run_id, "accvit_med.resumed", "true")
        else:
            self.run_id = self._create(record, uri)
        if params:
            self.client.log_batch(self.run_id, params=[Param(k, v[:6000]) for k, v in params.items()])

    def _stored(self, uri: str) -> Optional[str]:
        file = self.run_dir / ID_FILE
        if not file.is_file():
            return None
        data = json.loads(file.read_text(encoding="utf-8"))
        return data.get("run_id") if data.get("tracking_uri") == uri else None

    def _create(self, record: dict, uri: str) -> str:
        # Pre-training runs have no data set name: their experiment is accvit-med/pretrain.
        dataset = str(record.get("dataset") or ("pretrain" if record.get("task") == "pretrain" else None))
        model = str(record.get("model"))
        name = os.environ.get(EXPERIMENT_ENV) or f"accvit-med/{dataset}"
        experiment = self.client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(name)
        recipe = record.get("recipe", {})
        tags = {"dataset": dataset, "model": model, "seed": str(recipe.get("seed")),
                "accvit_med.run_dir": str(self.run_dir.resolve())}
        if recipe.get("fold") is not None:
            tags["fold"] = str(recipe["fold"])
        commit = git_commit()
        if commit:
            tags["mlflow.source.git.commit"] = commit
        run = self.client.create_run(experiment_id, run_name=f"{model}/{self.run_dir.name}", tags=tags)
        atomic_write_json(self.run_dir / ID_FILE, {"tracking_uri": uri, "experiment_id": experiment_id,
                                                   "run_id": run.info.run_id})
        return run.info.run_id

    def on_epoch_end(self, row: dict) -> None:
        from mlflow.entities import Metric

        self.epoch = int(row["epoch"])
        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, self.epoch) for k, v in scalar_items(row).items() if k != "epoch"]
        self.client.log_batch(self.run_id, metrics=metrics)

    def on_fit_end(self, metrics: dict, artifacts: Sequence[Path]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(f"test_{k}", v, now, self.epoch)
                                                    for k, v in scalar_items(metrics).items()])
        for path in artifacts:
            if Path(path).is_file():
                self.client.log_artifact(self.run_id, str(path))
        self.client.set_terminated(self.run_id, "FINISHED")
