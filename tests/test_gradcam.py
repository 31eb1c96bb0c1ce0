"""Grad-CAM: the maths against the closed form, each family's layer and layout, and where a trained model looks.

The trained model is the registry's ``convnext_tiny`` shrunk to a few thousand parameters
(``helpers.tiny_models.shrink_convnext`` swaps the registry's builder): a genuine torchvision ConvNeXt,
so the registry's target layer (``features.7``), run loading and the CLI are the real code paths, and
it trains on CPU in seconds. ACC-ViT and Swin are checked untrained, for shapes and layouts. The
images are the quadrant task of ``helpers.quadrant_runs``.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from helpers.quadrant_runs import QUADRANT_CLASSES, SIDE, make_quadrant_folder, train_quadrant_run
from helpers.tiny_models import GapNet, shrink_convnext
from PIL import Image
from typer.testing import CliRunner

from accvit_med.cli import app
from accvit_med.errors import UserError
from accvit_med.interpret import CamImage, CamTarget, explain_images, grad_cam, load_run, registry_target
from accvit_med.models import create_model


@pytest.fixture
def small_convnext_registry(monkeypatch):
    shrink_convnext(monkeypatch)


@pytest.fixture(scope="module")
def quadrant_run(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        shrink_convnext(patch)
        root = tmp_path_factory.mktemp("quadrant")
        return train_quadrant_run(root, epochs=8, per_class=40)


@pytest.fixture(scope="module")
def undertrained_run(tmp_path_factory):
    """One epoch on a few images: a run that gets some test images wrong."""
    with pytest.MonkeyPatch.context() as patch:
        shrink_convnext(patch)
        return train_quadrant_run(tmp_path_factory.mktemp("undertrained"), epochs=1, per_class=14)


def _normalised(maps: torch.Tensor) -> torch.Tensor:
    peak = maps.amax(dim=(1, 2), keepdim=True)
    return torch.where(peak > 0, maps / peak, torch.zeros_like(maps))


def test_grad_cam_equals_class_activation_mapping_for_a_gap_linear_head():
    # With global average pooling then a linear layer, d y_c / d A_k = w_ck / (h w) everywhere, so
    # Grad-CAM is ReLU(sum_k w_ck A_k) up to a positive factor (Zhou et al.'s CAM; Selvaraju et al. 3.1).
    torch.manual_seed(0)
    model = GapNet().eval()
    images = torch.randn(4, 3, 32, 32)
    result = grad_cam(model, images, CamTarget("features.1"), class_index=[0, 1, 2, 1])

    with torch.no_grad():
        activations = model.features(images)
        weights = model.head.weight[torch.tensor([0, 1, 2, 1])]
        expected = torch.relu(torch.einsum("bk,bkhw->bhw", weights, activations))[:, None]
        expected = torch.nn.functional.interpolate(expected, size=(32, 32), mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(result.maps, _normalised(expected), atol=1e-5, rtol=1e-4)
    assert result.classes.tolist() == [0, 1, 2, 1]
    torch.testing.assert_close(result.probabilities, model(images).softmax(dim=1).detach())


class SpatialNet(GapNet):
    """GapNet with a fixed positive map M over the pooled positions: y_c = sum_k w_ck mean_ij(M_ij A_kij).

    The gradient d y_c / d A_k[i, j] = w_ck M_ij / (h w) varies over space, so Grad-CAM (which
    averages it: w_ck mean(M) / (h w)) differs from gradient x activation (which keeps M_ij).
    """

    def __init__(self, num_classes: int = 3):
        super().__init__(num_classes)
        ramp = torch.linspace(0.05, 3.0, 64).reshape(8, 8)
        self.register_buffer("spatial", ramp * ramp.T.flip(0))  # uneven in both directions, all > 0

    def forward(self, x):
        return self.head((self.features(x) * self.spatial).mean(dim=(2, 3)))


def test_grad_cam_averages_a_gradient_that_varies_over_space():
    torch.manual_seed(2)
    model = SpatialNet().eval()
    images = torch.randn(4, 3, 32, 32)
    chosen = torch.tensor([2, 0, 1, 2])
    result = grad_cam(model, images, CamTarget("features.1"), class_index=chosen)

    # By hand: channel weights alpha_ck = mean_ij(w_ck M_ij / (h w)) = w_ck mean(M) / 64.
    with torch.no_grad():
        activations = model.features(images)
        alpha = model.head.weight[chosen] * model.spatial.mean() / 64
        expected = torch.relu(torch.einsum("bk,bkhw->bhw", alpha, activations))[:, None]
        expected = torch.nn.functional.interpolate(expected, size=(32, 32), mode="bilinear", align_corners=False)[:, 0]
        # What gradient x activation would give: visibly different maps, so the check has teeth.
        masked = activations * model.spatial
        per_pixel = torch.relu(torch.einsum("bk,bkhw->bhw", model.head.weight[chosen], masked))[:, None]
        per_pixel = torch.nn.functional.interpolate(per_pixel, size=(32, 32), mode="bilinear",
                                                    align_corners=False)[:, 0]
    assert (_normalised(per_pixel) - _normalised(expected)).abs().max() > 0.1
    torch.testing.assert_close(result.maps, _normalised(expected), atol=1e-5, rtol=1e-4)


def test_default_class_is_the_prediction_and_batches_are_independent():
    torch.manual_seed(1)
    model = GapNet().eval()
    images = torch.randn(5, 3, 32, 32)
    batched = grad_cam(model, images, CamTarget("features.1"))
    assert batched.classes.tolist() == model(images).argmax(dim=1).tolist()
    one_by_one = torch.cat([grad_cam(model, images[i:i + 1], CamTarget("features.1")).maps for i in range(5)])
    torch.testing.assert_close(batched.maps, one_by_one, atol=1e-6, rtol=1e-5)


def test_hooks_are_released_after_every_call_even_on_error():
    model = GapNet().eval()
    layer = model.get_submodule("features.1")
    for _ in range(5):
        grad_cam(model, torch.randn(2, 3, 32, 32), CamTarget("features.1"))
    assert len(layer._forward_hooks) == 0
    with pytest.raises(RuntimeError):
        grad_cam(model, torch.randn(2, 5, 32, 32), CamTarget("features.1"))  # wrong channel count
    assert len(layer._forward_hooks) == 0
    with pytest.raises(UserError, match="no layer 'features.9'"):
        grad_cam(model, torch.randn(1, 3, 32, 32), CamTarget("features.9"))


def test_grad_cam_needs_eval_mode():
    with pytest.raises(ValueError, match="eval mode"):
        grad_cam(GapNet().train(), torch.randn(1, 3, 32, 32), CamTarget("features.1"))


def test_swin_channels_last_maps_match_the_permuted_layer():
    # torchvision's Swin: norm gives (B, h, w, C); the next module, permute, gives (B, C, h, w).
    # The registry's layer with its layout flag must give the very maps of the channels-first copy.
    torch.manual_seed(0)
    model = create_model("swin_t", num_classes=3).eval()
    target = registry_target("swin_t")
    assert target == CamTarget("norm", channels_last=True)
    images = torch.randn(2, 3, 64, 64)
    from_norm = grad_cam(model, images, target, class_index=1)
    from_permute = grad_cam(model, images, CamTarget("permute", channels_last=False), class_index=1)
    assert from_norm.maps.shape == (2, 64, 64)
    assert from_norm.maps.amax() == pytest.approx(1.0)
    torch.testing.assert_close(from_norm.maps, from_permute.maps, atol=1e-5, rtol=1e-4)
    # The layout flag matters: reading the (B, h, w, C) map as (B, C, h, w) gives other maps.
    misread = grad_cam(model, images, CamTarget("norm", channels_last=False), class_index=1)
    assert not torch.allclose(misread.maps, from_norm.maps, atol=1e-2)


def test_accvit_last_stage_gives_a_map_per_image():
    torch.manual_seed(0)
    model = create_model("accvit_femto", num_classes=4).eval()
    target = registry_target("accvit_femto")
    assert target == CamTarget("stages.3", channels_last=False)
    result = grad_cam(model, torch.randn(2, 3, 224, 224), target)
    assert result.maps.shape == (2, 224, 224)
    assert float(result.maps.min()) >= 0.0 and float(result.maps.max()) <= 1.0
    # Each map peaks at exactly 1 (all zero only when no location has positive evidence).
    assert all(float(m.max()) in (0.0, 1.0) for m in result.maps)
    assert result.classes.tolist() == result.probabilities.argmax(dim=1).tolist()
    assert len(model.get_submodule("stages.3")._forward_hooks) == 0


def _quadrant_mass(maps: torch.Tensor) -> torch.Tensor:
    """(B, 4): the share of each map in the top-left, top-right, bottom-left, bottom-right quadrant."""
    half = maps.shape[-1] // 2
    parts = [maps[:, :half, :half], maps[:, :half, half:], maps[:, half:, :half], maps[:, half:, half:]]
    sums = torch.stack([part.sum(dim=(1, 2)) for part in parts], dim=1)
    return sums / sums.sum(dim=1, keepdim=True).clamp_min(1e-12)


def test_trained_model_looks_at_the_quadrant_that_holds_the_signal(quadrant_run, small_convnext_registry, tmp_path):
    run = load_run(quadrant_run, device="cpu")
    assert run.model_name == "convnext_tiny" and run.classes == list(QUADRANT_CLASSES)
    make_quadrant_folder(tmp_path / "fresh", per_class=12, seed=99)  # unseen images
    paths = sorted((tmp_path / "fresh" / "signal").glob("*.png"))
    images = torch.stack([run.preprocess(p) for p in paths])
    result = grad_cam(run.model, images, registry_target("convnext_tiny"), class_index=QUADRANT_CLASSES.index("signal"))
    # The model learnt the task (else the map would mean nothing)...
    assert float(result.probabilities[:, 1].mean()) > 0.8
    # ...and its evidence for 'signal' sits in the top-left quadrant (a quarter of the image): most
    # of the mass on average (a 2 x 2 map upsampled bilinearly can put at most 77% there), and more
    # than in any other quadrant for nearly every image (Grad-CAM at 1/32 resolution is coarse: on
    # 80 such images about 1 in 20 had its largest share elsewhere).
    quadrants = _quadrant_mass(result.maps)
    assert float(quadrants[:, 0].mean()) > 0.6, quadrants
    assert int((quadrants.argmax(dim=1) == 0).sum()) >= 10, quadrants


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_cli_grid_of_two_runs_on_the_test_errors(undertrained_run, quadrant_run, small_convnext_registry, tmp_path):
    predictions = _read_csv(undertrained_run / "predictions_test.csv")
    errors = [row for row in predictions if row["label"] != row["pred"]]
    assert errors, "one epoch on a few images should leave test errors"
    out = tmp_path / "cams"
    result = CliRunner().invoke(app, ["gradcam", "--run", str(undertrained_run), "--run", str(quadrant_run),
                                      "--misclassified", "--limit", "3", "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    rows = _read_csv(out / "gradcam.csv")
    shown = min(3, len(errors))
    # Most confident errors first, as the first run saw them, each explained by both runs.
    errors.sort(key=lambda row: -max(float(v) for k, v in row.items() if k.startswith("prob_")))
    first_run = [row for row in rows if row["run"] == str(undertrained_run)][:shown]
    assert [Path(row["path"]).name for row in first_run] == [Path(row["path"]).name for row in errors[:shown]]
    assert all(row["label"] != row["pred"] for row in first_run)
    assert len(rows) == 2 * shown and all(row["label"] in QUADRANT_CLASSES for row in rows)
    for row in rows:
        with Image.open(out / row["overlay"]) as overlay:
            assert overlay.size == (SIDE, SIDE)
    with Image.open(out / "grid.png") as grid:
        assert grid.width > grid.height * 3 / (shown + 0.5)  # three columns: input + two runs


def test_cli_says_so_when_the_test_set_has_no_errors(quadrant_run, small_convnext_registry, tmp_path):
    predictions = _read_csv(quadrant_run / "predictions_test.csv")
    assert all(row["label"] == row["pred"] for row in predictions)
    args = ["gradcam", "--run", str(quadrant_run), "--misclassified", "--out", str(tmp_path / "c")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0 and "classified every test image correctly" in result.stdout
    assert not (tmp_path / "c").exists()


def test_cli_images_pages_and_class_choice(quadrant_run, small_convnext_registry, tmp_path):
    make_quadrant_folder(tmp_path / "new", per_class=3, seed=5)
    out = tmp_path / "cams"
    result = CliRunner().invoke(app, ["gradcam", "--run", str(quadrant_run), str(tmp_path / "new"), "--out", str(out),
                                      "--class", "signal", "--rows-per-grid", "4", "--batch-size", "4"])
    assert result.exit_code == 0, result.output
    rows = _read_csv(out / "gradcam.csv")
    assert len(rows) == 6 and {row["explained"] for row in rows} == {"signal"}
    assert sorted(p.name for p in out.glob("grid*.png")) == ["grid_001.png", "grid_002.png"]
    assert len(list(out.glob("convnext_tiny_run/*.png"))) == 6


def test_explain_images_is_deterministic(quadrant_run, small_convnext_registry, tmp_path):
    make_quadrant_folder(tmp_path / "new", per_class=1, seed=6)
    run = load_run(quadrant_run, device="cpu")
    images = [CamImage(p) for p in sorted((tmp_path / "new").rglob("*.png"))]
    first = explain_images([run], images, tmp_path / "a", progress=False)
    explain_images([run], images, tmp_path / "b", progress=False)
    for path in sorted((tmp_path / "a").rglob("*.png")):
        assert path.read_bytes() == (tmp_path / "b" / path.relative_to(tmp_path / "a")).read_bytes()
    assert first.overlays == 2


def test_cli_errors_are_one_line(quadrant_run, small_convnext_registry, tmp_path):
    runner = CliRunner()
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    cases = [
        (["gradcam", "--run", str(quadrant_run)], "nothing to explain"),
        (["gradcam", "--run", str(tmp_path / "nowhere"), str(bad)], "does not exist"),
        (["gradcam", "--run", str(quadrant_run), str(bad)], "cannot read image"),
        (["gradcam", "--run", str(quadrant_run), str(bad), "--class", "nope"], "--class 'nope'"),
    ]
    for args, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
