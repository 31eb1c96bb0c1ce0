"""``accvit-med predict``: probabilities equal the model's softmax on torchvision's preprocessing,
TTA, files and folders, the CSV, and one clear line for every bad input.

The run is a short fine-tuning of the registry's ``convnext_tiny`` shrunk to a few thousand
parameters (see tests/test_gradcam.py), so loading goes through ``create_model`` as for any run.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers.quadrant_runs import QUADRANT_CLASSES, SIDE, make_quadrant_folder, train_quadrant_run
from helpers.tiny_models import GapNet, shrink_convnext
from PIL import Image
from torchvision import transforms as T
from typer.testing import CliRunner

from accvit_med.cli import app
from accvit_med.errors import UserError
from accvit_med.interpret import collect_images, load_run, predict_images


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        shrink_convnext(patch)
        return train_quadrant_run(tmp_path_factory.mktemp("predict"), epochs=1, per_class=8)


@pytest.fixture(autouse=True)
def small_convnext(monkeypatch):
    shrink_convnext(monkeypatch)


@pytest.fixture
def images(tmp_path) -> Path:
    """Unseen images of another size and shape, in nested folders, so resizing and cropping matter."""
    root = make_quadrant_folder(tmp_path / "new", per_class=3, seed=11)
    for i, path in enumerate(sorted(root.rglob("*.png"))):
        with Image.open(path) as image:
            image.resize((SIDE + 13 * i, SIDE + 7), Image.BILINEAR).save(path)
    return root


def reference_probabilities(model: torch.nn.Module, path: Path, size: int, flips: tuple = ()) -> np.ndarray:
    """torchvision's own evaluation transform (the one transforms.py says it reproduces), then softmax."""
    transform = T.Compose([T.Resize(size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(size), T.ToTensor(),
                           T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    with Image.open(path) as image:
        x = transform(image.convert("RGB"))[None]
    with torch.no_grad():
        views = [x] + [x.flip(dim) for dim in flips]
        return torch.stack([model(v).double().softmax(dim=1) for v in views]).mean(dim=0)[0].numpy()


def test_probabilities_equal_the_models_softmax_on_the_preprocessed_image(run_dir, images):
    run = load_run(run_dir, device="cpu")
    paths = collect_images([images])
    result = predict_images(run, paths, batch_size=4, progress=False)
    assert result.classes == list(QUADRANT_CLASSES) and result.paths == [str(p) for p in paths]
    expected = np.stack([reference_probabilities(run.model, p, run.image_size) for p in paths])
    np.testing.assert_allclose(result.probabilities, expected, atol=1e-5)
    assert result.predicted == [QUADRANT_CLASSES[i] for i in expected.argmax(axis=1)]

    h = predict_images(run, paths, tta="h", batch_size=4, progress=False)
    np.testing.assert_allclose(
        h.probabilities, [reference_probabilities(run.model, p, run.image_size, (-1,)) for p in paths], atol=1e-5)
    hv = predict_images(run, paths, tta="hv", batch_size=5, progress=False)
    np.testing.assert_allclose(
        hv.probabilities, [reference_probabilities(run.model, p, run.image_size, (-1, -2)) for p in paths], atol=1e-5)
    assert not np.allclose(h.probabilities, result.probabilities, atol=1e-7)  # the flip did something


def test_cli_writes_the_csv_and_prints_a_table(run_dir, images, tmp_path):
    out = tmp_path / "preds.csv"
    single = next(images.rglob("*.png"))
    result = CliRunner().invoke(app, ["predict", "--run", str(run_dir), str(images), str(single), "--out", str(out),
                                      "--workers", "0", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(out)
    assert list(frame.columns) == ["path", "pred", *(f"prob_{c}" for c in QUADRANT_CLASSES)]
    paths = collect_images([images])
    assert frame["path"].tolist() == [str(p) for p in paths]  # the single file was already in the folder
    probabilities = frame[[f"prob_{c}" for c in QUADRANT_CLASSES]].to_numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)
    assert (frame["pred"] == np.asarray(QUADRANT_CLASSES)[probabilities.argmax(axis=1)]).all()
    library = predict_images(load_run(run_dir, device="cpu"), paths, progress=False)
    np.testing.assert_allclose(probabilities, library.probabilities, atol=1e-7)
    assert "pred" in result.stdout and paths[0].name in result.stdout


def test_cli_without_out_prints_only_the_table(run_dir, images, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["predict", "--run", str(run_dir), str(images), "--workers", "0", "--tta", "h"])
    assert result.exit_code == 0, result.output
    assert "TTA h" in result.stdout and "signal" in result.stdout
    assert not list(tmp_path.glob("*.csv"))


def test_unreadable_image_stops_everything_or_is_skipped(run_dir, images, tmp_path):
    bad = images / "signal" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    out = tmp_path / "preds.csv"
    runner = CliRunner()
    result = runner.invoke(app, ["predict", "--run", str(run_dir), str(images), "--out", str(out), "--workers", "0"])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()] and "broken.png" in result.stderr
    assert "--skip-bad" in result.stderr and not out.exists()

    result = runner.invoke(app, ["predict", "--run", str(run_dir), str(images), "--out", str(out), "--workers", "0",
                                 "--skip-bad"])
    assert result.exit_code == 0, result.output
    assert "skipped unreadable image" in result.stderr and "broken.png" in result.stderr
    frame = pd.read_csv(out)
    assert len(frame) == 6 and not frame["path"].str.endswith("broken.png").any()


def test_bad_input_is_one_line(run_dir, images, tmp_path):
    no_checkpoint = tmp_path / "no_checkpoint"
    shutil.copytree(run_dir, no_checkpoint)
    shutil.rmtree(no_checkpoint / "checkpoints")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    image = str(next(images.rglob("*.png")))
    cases = [
        (["--run", str(no_checkpoint), image], "has no checkpoint checkpoints/best.pt"),
        (["--run", str(tmp_path), image], "no config.json"),
        (["--run", str(run_dir), str(tmp_path / "missing.png")], "missing.png' does not exist"),
        (["--run", str(run_dir), str(empty)], "holds no image files"),
        (["--run", str(run_dir), image, "--tta", "rotate"], "--tta must be one of none, h, hv"),
        (["--run", str(run_dir), image, "--checkpoint", "final"], "--checkpoint must be best or last"),
    ]
    for args, message in cases:
        result = CliRunner().invoke(app, ["predict", *args])
        assert result.exit_code == 2, (args, result.output)
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_custom_network_runs_need_their_factory(tmp_path):
    from accvit_med.datasets.create_split import create_split
    from accvit_med.training.finetune import finetune
    from accvit_med.training.recipe import FinetuneConfig

    make_quadrant_folder(tmp_path / "images", per_class=6)
    create_split("folder", tmp_path / "images", tmp_path / "split.csv", seed=0, grouped=False, progress=False)
    config = FinetuneConfig(split=str(tmp_path / "split.csv"), model="gapnet", weights="none", epochs=1,
                            batch_size=4, image_size=32, workers=0).validate()
    finetune(config, out=str(tmp_path / "run"), model_factory=GapNet)
    with pytest.raises(UserError, match="custom network"):
        load_run(tmp_path / "run")
    run = load_run(tmp_path / "run", checkpoint="last", model_factory=GapNet)
    assert run.classes == list(QUADRANT_CLASSES) and run.image_size == 32 and not run.model.training
    assert run.preprocess(next((tmp_path / "images").rglob("*.png"))).shape == (3, 32, 32)
