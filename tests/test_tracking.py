"""``finetune --track``: what TensorBoard's EventAccumulator and MLflow's client read back equals
the run's own history.csv and metrics.json; a resumed run continues the same MLflow run; a
tracking server stopped mid-run is one warning line and the run finishes.

MLflow runs against a real ``mlflow server`` (sqlite backend) started here on 127.0.0.1 on a free
port and stopped at the end. The runs are the shrunk ConvNeXt of tests/test_gradcam.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
from helpers.quadrant_runs import make_quadrant_folder
from helpers.tiny_models import shrink_convnext
from sklearn.metrics import f1_score
from typer.testing import CliRunner

from accvit_med.cli import app
from accvit_med.datasets.create_split import create_split
from accvit_med.tracking import mlflow_tracker
from accvit_med.training.finetune import finetune
from accvit_med.training.recipe import FinetuneConfig


@pytest.fixture(scope="module")
def split_csv(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("track")
    make_quadrant_folder(root / "images", per_class=6)
    create_split("folder", root / "images", root / "split.csv", seed=0, grouped=False, progress=False)
    return root / "split.csv"


@pytest.fixture(autouse=True)
def small_convnext(monkeypatch):
    shrink_convnext(monkeypatch)


def run_finetune(split_csv: Path, out: Path, epochs: int, track: str, resume: bool = False):
    config = FinetuneConfig(split=str(split_csv), model="convnext_tiny", weights="none", epochs=epochs, batch_size=4,
                            lr=1e-3, image_size=64, randaugment_ops=0, workers=0, seed=1).validate()
    return finetune(config, out=str(out), track=track, resume=resume)


def test_tensorboard_events_read_back_equal_the_runs_files(split_csv, tmp_path):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator",
                                            reason="the tracking extra is not installed")
    out = tmp_path / "run"
    run_finetune(split_csv, out, epochs=2, track="tensorboard")
    run_finetune(split_csv, out, epochs=3, track="tensorboard", resume=True)
    events = event_accumulator.EventAccumulator(str(out / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    history = pd.read_csv(out / "history.csv")
    tags = (("train_loss", "loss/train"), ("val_loss", "loss/val"), ("val_acc", "accuracy/val"), ("lr", "lr"))
    for column, tag in tags:
        scalars = events.Scalars(tag)
        assert [s.step for s in scalars] == [1, 2, 3], tag  # the resumed run continues the curve
        assert [s.value for s in scalars] == pytest.approx(history[column].tolist(), rel=1e-6), tag
    # Validation macro-F1 per epoch: at the best epoch, scikit-learn's on that epoch's predictions
    # (predictions_val.csv is written from best.pt, the weights validated then).
    f1_curve = events.Scalars("macro_f1/val")
    assert [s.step for s in f1_curve] == [1, 2, 3]
    metrics = json.loads((out / "metrics.json").read_text())
    val = pd.read_csv(out / "predictions_val.csv")
    classes = sorted(c[len("prob_"):] for c in val.columns if c.startswith("prob_"))
    expected = f1_score(val["label"].astype(str), val["pred"].astype(str), labels=classes, average="macro",
                        zero_division=0)
    best = int(history["val_loss"].idxmin())
    assert f1_curve[best].value == pytest.approx(expected, rel=1e-6)
    assert events.Scalars("test/accuracy")[-1].value == pytest.approx(metrics["accuracy"], rel=1e-6)
    assert events.Scalars("test/macro_f1")[-1].value == pytest.approx(metrics["macro_f1"], rel=1e-6)
    assert "test/confusion_matrix" in events.Tags()["images"]
    hparams = event_accumulator.EventAccumulator(str(out / "tensorboard" / "hparams"))
    hparams.Reload()
    assert "hparams" in hparams.PluginTagToContent("hparams") or hparams.PluginTagToContent("hparams")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    pytest.importorskip("mlflow", reason="the tracking extra is not installed")
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    db = f"sqlite:///{root / 'mlflow.db'}"
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", db, "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1", "--artifacts-destination", str(root / "artifacts")],
        cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                break
        except OSError:
            time.sleep(0.5)
    else:
        os.killpg(process.pid, signal.SIGTERM)
        pytest.fail("mlflow server did not start within 240 s")
    server = {"url": url, "db": db, "process": process}
    yield server
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def stop(server) -> None:
    os.killpg(server["process"].pid, signal.SIGTERM)
    server["process"].wait(timeout=30)


def test_mlflow_run_read_back_and_resumed(split_csv, tmp_path, mlflow_server, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server["url"])
    monkeypatch.setenv(mlflow_tracker.EXPERIMENT_ENV, "tracking-test")
    out = tmp_path / "run"
    run_finetune(split_csv, out, epochs=2, track="mlflow")
    first_id = json.loads((out / "mlflow.json").read_text())["run_id"]
    run_finetune(split_csv, out, epochs=3, track="mlflow", resume=True)

    client = MlflowClient(tracking_uri=mlflow_server["url"])
    experiment = client.get_experiment_by_name("tracking-test")
    runs = client.search_runs([experiment.experiment_id])
    assert [r.info.run_id for r in runs] == [first_id]  # the resumed run went on in the same MLflow run
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["lr"] == "0.001" and run.data.params["model"] == "convnext_tiny"
    assert run.data.tags["model"] == "convnext_tiny" and run.data.tags["seed"] == "1"
    assert run.data.tags["dataset"] == json.loads((out / "config.json").read_text())["dataset"]
    history = pd.read_csv(out / "history.csv")
    for column in ("train_loss", "val_loss", "val_acc", "lr"):
        logged = sorted(client.get_metric_history(first_id, column), key=lambda m: m.step)
        assert [m.step for m in logged] == [1, 2, 3], column
        assert [m.value for m in logged] == pytest.approx(history[column].tolist(), rel=1e-9), column
    assert [m.step for m in client.get_metric_history(first_id, "val_macro_f1")] == [1, 2, 3]
    metrics = json.loads((out / "metrics.json").read_text())
    assert run.data.metrics["test_accuracy"] == pytest.approx(metrics["accuracy"])
    assert run.data.metrics["test_macro_f1"] == pytest.approx(metrics["macro_f1"])
    artifacts = {a.path for a in client.list_artifacts(first_id)}
    assert {"metrics.json", "config.json", "history.csv", "predictions_test.csv"} <= artifacts


def test_a_server_stopped_mid_run_is_one_warning_and_training_goes_on(split_csv, tmp_path, mlflow_server,
                                                                      monkeypatch, capfd):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server["url"])
    monkeypatch.setenv(mlflow_tracker.EXPERIMENT_ENV, "stopped-server")
    real = mlflow_tracker.MLflowTracker.on_epoch_end

    def stop_before_epoch_2(self, row):
        if row["epoch"] == 2:
            stop(mlflow_server)
        real(self, row)

    monkeypatch.setattr(mlflow_tracker.MLflowTracker, "on_epoch_end", stop_before_epoch_2)
    out = tmp_path / "run"
    result = run_finetune(split_csv, out, epochs=3, track="mlflow")
    assert len(pd.read_csv(out / "history.csv")) == 3 and (out / "metrics.json").is_file()
    assert result.metrics["accuracy"] == json.loads((out / "metrics.json").read_text())["accuracy"]
    warnings = [line for line in capfd.readouterr().err.splitlines() if "--track mlflow" in line]
    assert len(warnings) == 1 and "training goes on" in warnings[0]
    # What reached the server before it stopped is in its store: epoch 1 only.
    client = MlflowClient(tracking_uri=mlflow_server["db"])
    run_id = json.loads((out / "mlflow.json").read_text())["run_id"]
    assert [m.step for m in client.get_metric_history(run_id, "train_loss")] == [1]


def test_track_needs_its_package_and_a_known_name(split_csv, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if not installed
    runner = CliRunner()
    for track, message in (("mlflow", "pip install 'accvit-med[tracking]'"), ("wandb", "--track must be one of")):
        out = tmp_path / track
        args = ["finetune", "--split", str(split_csv), "--model", "convnext_tiny", "--weights", "none",
                "--epochs", "1", "--image-size", "64", "--out", str(out), "--track", track]
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr
        assert not out.exists()
    # A sweep hands --track to its runs through the environment: both ends refuse a bad name.
    result = runner.invoke(app, ["sweep", str(tmp_path / "plan.toml"), "--track", "wandb"])
    assert result.exit_code == 2 and "--track must be one of" in result.stderr
    result = runner.invoke(app, ["finetune", "--split", str(split_csv), "--out", str(tmp_path / "env")],
                           env={"ACCVIT_MED_TRACK": "wandb"})
    assert result.exit_code == 2 and "--track must be one of" in result.stderr and not (tmp_path / "env").exists()


def test_pretraining_is_tracked_and_a_resumed_run_continues_the_curves(tmp_path):
    """``pretrain --track tensorboard``: TensorBoard's EventAccumulator reads back history.csv's
    losses and top-1 of both invocations (the second a --resume), one step per epoch."""
    import numpy as np
    from PIL import Image

    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator",
                                            reason="the tracking extra is not installed")
    rng = np.random.default_rng(0)
    for part, per_class in (("train", 2), ("val", 1)):
        for wnid in ("n01440764", "n01443537"):
            (tmp_path / "imagenet" / part / wnid).mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(tmp_path / "imagenet" / part / wnid / f"{i}.JPEG")
    out = tmp_path / "run"
    common = ["pretrain", "--data-path", str(tmp_path / "imagenet"), "--model", "accvit_femto", "--out", str(out),
              "--workers", "0", "--device", "cpu", "--track", "tensorboard"]
    runner = CliRunner()
    first = runner.invoke(app, [*common, "--epochs", "2", "--warmup-epochs", "1", "--global-batch-size", "4",
                                "--stop-after", "1"])
    assert first.exit_code == 0, first.output
    second = runner.invoke(app, [*common, "--resume"])
    assert second.exit_code == 0, second.output
    events = event_accumulator.EventAccumulator(str(out / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    history = pd.read_csv(out / "history.csv")
    for column, tag in (("train_loss", "loss/train"), ("val_loss", "loss/val"), ("val_top1", "top1/val"),
                        ("lr", "lr")):
        scalars = events.Scalars(tag)
        assert [s.step for s in scalars] == [1, 2], tag
        assert [s.value for s in scalars] == pytest.approx(history[column].tolist(), rel=1e-6), tag


def test_pretrain_track_names_a_missing_or_unknown_tracker_in_one_line(tmp_path):
    result = CliRunner().invoke(app, ["pretrain", "--data-path", str(tmp_path), "--model", "accvit_femto",
                                      "--out", str(tmp_path / "run"), "--track", "wandb"])
    assert result.exit_code == 2 and "--track" in result.stderr and "wandb" in result.stderr
    assert not (tmp_path / "run").exists()


SWEEP_PLAN = """
datasets = ["folder"]
models = ["convnext_tiny"]
seeds = [0, 1]
out = "runs"
[recipe]
epochs = 1
weights = "none"
batch_size = 4
workers = 0
image_size = 64
randaugment_ops = 0
"""


def test_a_tracked_sweep_is_one_mlflow_experiment_with_a_run_per_grid_point(split_csv, tmp_path):
    """``sweep --track mlflow``: every finetune of the plan (each its own process) logs to the same
    store, grouped in the plan's experiment, tagged with its model and seed; read back with MlflowClient."""
    pytest.importorskip("mlflow", reason="the tracking extra is not installed")
    from mlflow.tracking import MlflowClient

    (tmp_path / "splits").mkdir()
    shutil.copy(split_csv.with_suffix(".json"), tmp_path / "splits" / "folder.json")
    shutil.copy(split_csv, tmp_path / "splits" / "folder.csv")
    (tmp_path / "plan.toml").write_text(SWEEP_PLAN)
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": store, "OMP_NUM_THREADS": "1"}
    for name in ("ACCVIT_MED_TRACK", mlflow_tracker.EXPERIMENT_ENV):
        env.pop(name, None)
    done = subprocess.run([sys.executable, "-m", "accvit_med", "sweep", "plan.toml", "--track", "mlflow"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(tracking_uri=store)
    experiment = client.get_experiment_by_name("accvit-med/sweep/plan")
    assert experiment is not None, [e.name for e in client.search_experiments()]
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.data.tags["seed"] for r in runs) == ["0", "1"]
    for run in runs:
        assert run.data.tags["model"] == "convnext_tiny" and run.info.status == "FINISHED"
        folder = tmp_path / "runs" / "folder" / "convnext_tiny" / f"seed{run.data.tags['seed']}"
        assert json.loads((folder / "mlflow.json").read_text())["run_id"] == run.info.run_id
        logged = client.get_metric_history(run.info.run_id, "val_loss")
        assert [m.value for m in logged] == pytest.approx(pd.read_csv(folder / "history.csv")["val_loss"].tolist())
