"""The predictions CSV: round trip, and one clear line for every kind of bad file."""

from __future__ import annotations

import numpy as np
import pytest

from accvit_med import UserError
from accvit_med.reports import read_predictions, write_predictions


def _probs(n: int, k: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).dirichlet(np.ones(k), size=n)


def test_round_trip_keeps_names_order_and_probabilities(tmp_path):
    classes = ["0", "NA", "malignant"]  # names pandas would otherwise turn into numbers or NaN
    probs = _probs(6, 3)
    labels = [0, 1, 2, 2, 1, 0]
    preds = ["NA", "0", "malignant", "0", "NA", "malignant"]
    write_predictions(tmp_path / "p.csv", [f"img {i}.png" for i in range(6)], labels, preds, probs, classes)
    read = read_predictions(tmp_path / "p.csv")
    assert read.classes == tuple(classes)
    assert read.labels.tolist() == ["0", "NA", "malignant", "malignant", "NA", "0"]
    assert read.preds.tolist() == preds
    assert read.y_true.tolist() == labels
    np.testing.assert_allclose(read.probs, probs, atol=1e-8)
    assert read.paths.tolist() == [f"img {i}.png" for i in range(6)]
    header = (tmp_path / "p.csv").read_text().splitlines()[0]
    assert header == "path,label,pred,prob_0,prob_NA,prob_malignant"
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write left no temporary file


def _write(tmp_path, text: str):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "text, message",
    [
        ("path,label,prob_a,prob_b\nx,a,0.5,0.5\n", "lacks column(s) pred"),
        ("path,label,pred,prob_a\nx,a,a,1.0\n", "1 prob_<class> column"),
        ("path,label,pred,prob_a,prob_b\n", "has no rows"),
        ("path,label,pred,prob_a,prob_b\nx,a,a,0.5,0.5\ny,b,a,0.7,0.7\n", "line 3: probabilities sum to 1.4"),
        ("path,label,pred,prob_a,prob_b\nx,a,a,2.5,-1.5\n", "line 2: a probability is outside [0, 1]"),
        ("path,label,pred,prob_a,prob_b\nx,a,a,high,0.5\n", "line 2: a prob_ value is empty or not a number"),
        ("path,label,pred,prob_a,prob_b\nx,a,a,0.5,0.5\ny,c,a,0.5,0.5\n", "line 3: label 'c' is not one of"),
        ("path,label,pred,prob_a,prob_b\nx,a,z,0.5,0.5\n", "line 2: pred 'z' is not one of"),
        ("", "not a readable CSV"),
    ],
)
def test_bad_files_give_one_line(tmp_path, text, message):
    with pytest.raises(UserError) as caught:
        read_predictions(_write(tmp_path, text))
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="not found"):
        read_predictions(tmp_path / "nope.csv")


def test_write_rejects_mismatched_shapes(tmp_path):
    with pytest.raises(ValueError, match="shape"):
        write_predictions(tmp_path / "p.csv", ["a"], [0], [0], np.ones((1, 3)) / 3, ["x", "y"])
    with pytest.raises(ValueError, match="'q' is not one of"):
        write_predictions(tmp_path / "p.csv", ["a"], ["q"], [0], [[0.5, 0.5]], ["x", "y"])
    assert not (tmp_path / "p.csv").exists()
