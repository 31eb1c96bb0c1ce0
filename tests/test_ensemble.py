"""Ensembles: `evaluate --run A --run B ...` and `predict` with several --run average the runs'
probabilities (temperature-scaled on each run's validation predictions unless --no-calibrate),
checked against a numpy mean of the runs' own predictions CSVs; the report takes the ensemble's
folder as one more model.

The runs are the shrunk convnext_tiny of tests/test_gradcam.py, one epoch on the folds of a 2-fold
CV of a quadrant folder, and a second seed on fold 1.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers.quadrant_runs import QUADRANT_CLASSES, SIDE, make_quadrant_folder
from helpers.tiny_models import shrink_convnext
from scipy.optimize import minimize_scalar
from sklearn.metrics import accuracy_score
from typer.testing import CliRunner

from accvit_med.cli import app
from accvit_med.datasets import synthetic
from accvit_med.datasets.create_split import create_folds, create_split
from accvit_med.reports import write_report
from accvit_med.training.finetune import finetune
from accvit_med.training.recipe import FinetuneConfig

runner = CliRunner()
PROBS = [f"prob_{c}" for c in QUADRANT_CLASSES]


@pytest.fixture(autouse=True)
def small_convnext(monkeypatch):
    shrink_convnext(monkeypatch)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ensemble")
    with pytest.MonkeyPatch.context() as patch:
        shrink_convnext(patch)
        make_quadrant_folder(root / "images", per_class=12)
        folds = create_folds("folder", 2, root / "images", root / "cv", seed=0, progress=False)
        made = {}
        for name, split, seed in (("f1s3", folds.csv_paths[0], 3), ("f2s3", folds.csv_paths[1], 3),
                                  ("f1s4", folds.csv_paths[0], 4)):
            config = FinetuneConfig(split=str(split), model="convnext_tiny", weights="none", epochs=1, batch_size=8,
                                    lr=1e-3, image_size=SIDE, randaugment_ops=0, workers=0, seed=seed,
                                    label_smoothing=0.0).validate()
            finetune(config, out=str(root / "runs" / name))
            made[name] = root / "runs" / name
        # Another data set with the same classes (a different name: no image of it counts as seen).
        external = synthetic.make_csv_dataset(root / "external", classes=QUADRANT_CLASSES, per_class=4,
                                              size=(SIDE, SIDE), images_per_group=1)
        create_split("csv", external, root / "external.csv", seed=0, grouped=False, progress=False)
    return root, made


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False).set_index("path")


def _softmax_t(probs: np.ndarray, t: float) -> np.ndarray:
    z = np.log(np.clip(probs, 1e-300, None)) / t
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _val_temperature(run: Path) -> float:
    """The NLL-minimising temperature of the run's validation predictions, fitted here with scipy."""
    val = pd.read_csv(run / "predictions_val.csv", dtype=str, keep_default_na=False)
    probs = val[PROBS].astype(float).to_numpy()
    y = val["label"].map({c: i for i, c in enumerate(QUADRANT_CLASSES)}).to_numpy()

    def nll(t: float) -> float:
        return float(-np.log(_softmax_t(probs, t)[np.arange(len(y)), y]).mean())

    return float(minimize_scalar(nll, bounds=(np.exp(-5), np.exp(5)), method="bounded",
                                 options={"xatol": 1e-9}).x)


def test_fold_models_on_external_data_average_their_calibrated_probabilities(runs):
    root, made = runs
    out = root / "ens-external"
    result = runner.invoke(app, ["evaluate", "--run", str(made["f1s3"]), "--run", str(made["f2s3"]),
                                 "--external-split", str(root / "external.csv"), "--out", str(out), "--workers", "0"])
    assert result.exit_code == 0, result.output
    description = json.loads((out / "ensemble.json").read_text())
    assert description["label"] == "convnext_tiny (2-fold ensemble)" and description["calibrated"] is True
    ensemble = _read(out / "predictions_test.csv")
    expected = []
    for name in ("f1s3", "f2s3"):
        member = _read(made[name] / "external" / "csv" / "predictions.csv").loc[ensemble.index]
        expected.append(_softmax_t(member[PROBS].astype(float).to_numpy(), _val_temperature(made[name])))
    np.testing.assert_allclose(ensemble[PROBS].astype(float).to_numpy(), np.mean(expected, axis=0), atol=2e-5)
    assert (ensemble["pred"].to_numpy() == np.asarray(QUADRANT_CLASSES)[np.mean(expected, axis=0).argmax(1)]).all()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["accuracy"] == pytest.approx(accuracy_score(ensemble["label"], ensemble["pred"]))
    assert "convnext_tiny (2-fold ensemble) of 2 runs" in result.stdout


def test_no_calibrate_is_the_plain_mean_of_the_runs_csvs(runs):
    root, made = runs
    out = root / "ens-raw"
    result = runner.invoke(app, ["evaluate", "--run", str(made["f1s3"]), "--run", str(made["f2s3"]),
                                 "--external-split", str(root / "external.csv"), "--out", str(out), "--workers", "0",
                                 "--no-calibrate"])
    assert result.exit_code == 0, result.output
    ensemble = _read(out / "predictions_test.csv")
    members = [_read(made[n] / "external" / "csv" / "predictions.csv").loc[ensemble.index][PROBS].astype(float)
               for n in ("f1s3", "f2s3")]
    np.testing.assert_allclose(ensemble[PROBS].astype(float).to_numpy(), np.mean(members, axis=0), atol=2e-8)
    assert json.loads((out / "ensemble.json").read_text())["calibrated"] is False


def test_seeds_on_one_split_ensemble_on_its_test_part_and_the_report_takes_it(runs):
    root, made = runs
    out = root / "ens-seeds"
    result = runner.invoke(app, ["evaluate", "--run", str(made["f1s3"]), "--run", str(made["f1s4"]),
                                 "--out", str(out), "--workers", "0", "--no-calibrate"])
    assert result.exit_code == 0, result.output
    ensemble = _read(out / "predictions_test.csv")
    members = [_read(made[n] / "evaluate" / "best" / "predictions_test.csv").loc[ensemble.index][PROBS].astype(float)
               for n in ("f1s3", "f1s4")]
    np.testing.assert_allclose(ensemble[PROBS].astype(float).to_numpy(), np.mean(members, axis=0), atol=2e-8)
    report = write_report([made["f1s3"], made["f1s4"], out], root / "report", n_boot=20, progress=False)
    names = [run.name for run in report.datasets["folder"]]
    assert "convnext_tiny (2-seed ensemble)" in names and len(names) == 3


@pytest.mark.parametrize("which, extra, message", [
    (("f1s3", "f2s3"), ["--out", "{root}/x"], "were trained on different splits"),
    (("f1s3", "f1s4"), [], "needs --out FOLDER"),
    (("f1s3", "f1s3"), ["--out", "{root}/x"], "a run is given twice"),
    (("f1s3", "f1s4"), ["--out", "{run}/ens"], "lies inside run"),
])
def test_ensemble_mistakes_are_one_line(runs, which, extra, message):
    root, made = runs
    args = ["evaluate", *[a for name in which for a in ("--run", str(made[name]))],
            *[e.format(root=root, run=made["f1s3"]) for e in extra]]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines


def test_predict_with_several_runs_averages_each_runs_tta_probabilities(runs, tmp_path):
    root, made = runs
    images = make_quadrant_folder(tmp_path / "new", per_class=2, seed=5)
    singles = []
    for name in ("f1s3", "f2s3"):
        out = tmp_path / f"{name}.csv"
        result = runner.invoke(app, ["predict", "--run", str(made[name]), str(images), "--tta", "h",
                                     "--workers", "0", "--out", str(out)])
        assert result.exit_code == 0, result.output
        singles.append(_read(out))
    for calibrate, reference in (
            ("--no-calibrate", np.mean([s[PROBS].astype(float).to_numpy() for s in singles], axis=0)),
            ("--calibrate", np.mean([_softmax_t(s[PROBS].astype(float).to_numpy(), _val_temperature(made[n]))
                                     for s, n in zip(singles, ("f1s3", "f2s3"))], axis=0))):
        out = tmp_path / f"ensemble{calibrate}.csv"
        result = runner.invoke(app, ["predict", "--run", str(made["f1s3"]), "--run", str(made["f2s3"]), str(images),
                                     "--tta", "h", "--workers", "0", "--out", str(out), calibrate])
        assert result.exit_code == 0, result.output
        ensemble = _read(out).loc[singles[0].index]
        np.testing.assert_allclose(ensemble[PROBS].astype(float).to_numpy(), reference, atol=2e-5)
    assert "2-fold ensemble" in result.stdout
