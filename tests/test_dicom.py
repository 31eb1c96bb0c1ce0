"""DICOM input: pixels follow the DICOM display pipeline (modality LUT, VOI window, MONOCHROME1),
checked against the standard's formula written out here with numpy and against pydicom's own
``apply_modality_lut``/``apply_voi_lut``; bad files (truncated, multi-frame, compressed without a
decoder) are one line naming the file, everywhere an image is read.

Files: pydicom's bundled test files (found offline; never one it would download) and files
written here with known pixel values.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

pydicom = pytest.importorskip("pydicom", reason="the dicom extra is not installed (pip install 'accvit-med[dicom]')")

from pydicom.data import get_testdata_file  # noqa: E402
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.pixels import apply_modality_lut, apply_voi_lut  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid  # noqa: E402

from accvit_med.cli import app  # noqa: E402
from accvit_med.datasets.cache import ImageCache, decode_resized  # noqa: E402
from accvit_med.datasets.dicom import WINDOW_ENV  # noqa: E402
from accvit_med.datasets.imagepolicy import UnreadableImage, image_problem, open_image  # noqa: E402


def bundled(name: str) -> Path:
    path = get_testdata_file(name)  # a file inside the wheel; None if it is not there
    if path is None:
        pytest.skip(f"{name} is not among pydicom's bundled test files")
    return Path(path)


def standard_window(x: np.ndarray, center: float, width: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1 (LINEAR) with the output range 0..255, as the standard writes it."""
    low = center - 0.5 - (width - 1) / 2
    high = center - 0.5 + (width - 1) / 2
    inside = ((x - (center - 0.5)) / (width - 1) + 0.5) * 255
    return np.rint(np.where(x <= low, 0, np.where(x > high, 255, inside)))


def pydicom_8bit(ds) -> np.ndarray:
    """pydicom's modality LUT + first window, its output range [y_min, y_max] mapped onto 0..255."""
    values = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds, index=0)
    bits = ds.BitsStored
    y_min, y_max = (0, 2 ** bits - 1) if ds.PixelRepresentation == 0 else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    slope, intercept = float(ds.get("RescaleSlope", 1)), float(ds.get("RescaleIntercept", 0))
    y_min, y_max = y_min * slope + intercept, y_max * slope + intercept
    return (values - y_min) / (y_max - y_min) * 255


def write_dicom(path: Path, stored: np.ndarray, photometric="MONOCHROME2", slope=None, intercept=None,
                center=None, width=None) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    if slope is not None:
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if center is not None:
        ds.WindowCenter, ds.WindowWidth = center, width
    ds.PixelData = stored.astype(np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


KNOWN = (np.arange(256, dtype=np.uint16) * 16).reshape(16, 16)  # 0 .. 4080, 12 bits


def grey(path, **kwargs) -> np.ndarray:
    image = open_image(path, **kwargs)
    assert image.mode == "RGB"
    pixels = np.asarray(image)
    assert (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 0] == pixels[..., 2]).all()
    return pixels[..., 0].astype(np.float64)


def test_known_values_through_rescale_and_window(tmp_path):
    path = write_dicom(tmp_path / "ct.dcm", KNOWN, slope=2, intercept=-1024, center=40, width=400)
    expected = standard_window(KNOWN * 2.0 - 1024, 40, 400)
    np.testing.assert_array_equal(grey(path), expected)
    assert 0 < (expected == 0).sum() < expected.size and (expected == 255).any()  # the window clips both ends
    np.testing.assert_allclose(grey(path), pydicom_8bit(pydicom.dcmread(path)), atol=0.5 + 1e-9)


def test_monochrome1_is_inverted(tmp_path):
    path = write_dicom(tmp_path / "cr.dcm", KNOWN, photometric="MONOCHROME1", center=2048, width=2048)
    np.testing.assert_array_equal(grey(path), 255 - standard_window(KNOWN.astype(float), 2048, 2048))


def test_user_window_wins_over_the_files_and_changes_the_cache_key(tmp_path, monkeypatch):
    path = write_dicom(tmp_path / "ct.dcm", KNOWN, slope=1, intercept=-1000, center=40, width=400)
    cache = ImageCache(tmp_path / "cache", 16)
    files_entry = cache.entry(path)
    monkeypatch.setenv(WINDOW_ENV, "2000,1000")
    np.testing.assert_array_equal(grey(path), standard_window(KNOWN - 1000.0, 2000, 1000))
    assert cache.entry(path) != files_entry
    np.testing.assert_array_equal(np.asarray(cache.load(path)), np.asarray(decode_resized(path, 16)))


def test_without_a_window_the_value_range_fills_8_bits(tmp_path):
    path = write_dicom(tmp_path / "plain.dcm", KNOWN + 7, slope=1, intercept=-50)
    values = KNOWN - 43.0
    np.testing.assert_array_equal(grey(path), np.rint((values - values.min()) / np.ptp(values) * 255))


def test_bundled_files_decode_as_pydicom_displays_them():
    mr = pydicom.dcmread(bundled("MR_small.dcm"))
    assert "WindowCenter" in mr
    np.testing.assert_allclose(grey(bundled("MR_small.dcm")), pydicom_8bit(mr), atol=0.5 + 1e-9)
    # RLE Lossless is decoded by pydicom itself: the same pixels as the uncompressed copy.
    np.testing.assert_array_equal(grey(bundled("MR_small_RLE.dcm")), grey(bundled("MR_small.dcm")))
    ct = pydicom.dcmread(bundled("CT_small.dcm"))  # no window: the HU range fills 0..255
    hu = apply_modality_lut(ct.pixel_array, ct).astype(np.float64)
    np.testing.assert_array_equal(grey(bundled("CT_small.dcm")), np.rint((hu - hu.min()) / np.ptp(hu) * 255))


@pytest.mark.parametrize("name,reason", [
    ("MR_truncated.dcm", "less than expected"),
    ("SC_rgb_rle_2frame.dcm", "multi-frame DICOM (2 frames)"),
    ("JPEG-lossy.dcm", "pip install pylibjpeg pylibjpeg-libjpeg"),
])
def test_bad_bundled_files_are_unreadable_with_their_reason(name, reason):
    with pytest.raises(UnreadableImage) as caught:
        open_image(bundled(name))
    assert reason in caught.value.reason and name in str(caught.value)
    assert reason in image_problem(bundled(name))


def dicom_folder(root: Path) -> Path:
    """Two classes of DICOM files (written and bundled), one truncated file, a hidden AppleDouble file."""
    rng = np.random.default_rng(0)
    for label, shift in (("low", 0), ("high", 2000)):
        for i in range(4):
            write_dicom(root / label / f"scan{i}.dcm", rng.integers(0, 2000, (24, 20)) + shift, center=2048, width=4096)
    shutil.copy(bundled("CT_small.dcm"), root / "high" / "ct.dcm")
    shutil.copy(bundled("MR_truncated.dcm"), root / "low" / "truncated.dcm")
    (root / "low" / "._scan0.dcm").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    return root


def test_split_check_reads_dicom_folders_and_lists_the_bad_file(tmp_path):
    root = dicom_folder(tmp_path / "data")
    out = tmp_path / "split.csv"
    result = CliRunner().invoke(app, ["split", "--dataset", "folder", "--data-dir", str(root), "--out", str(out),
                                      "--check", "--no-group"])
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(out)
    assert len(frame) == 9 and frame["path"].str.endswith(".dcm").all()
    assert "truncated.dcm" in result.stdout and not frame["path"].str.contains("truncated|\\._", regex=True).any()


def test_predict_and_gradcam_read_dicom(tmp_path, monkeypatch):
    from helpers.quadrant_runs import train_quadrant_run
    from helpers.tiny_models import shrink_convnext

    shrink_convnext(monkeypatch)
    run = train_quadrant_run(tmp_path / "q", epochs=1, per_class=4)
    images = tmp_path / "images"
    scans = [write_dicom(images / f"s{i}.dcm", KNOWN * (i + 1) // 4, center=1000 * (i + 1), width=3000)
             for i in range(3)]
    for scan in scans:  # the same pixels as PNG: predictions must not depend on the container
        Image.fromarray(np.asarray(open_image(scan))).save(tmp_path / f"{scan.stem}.png")
    shutil.copy(bundled("JPEG-lossy.dcm"), images / "lossy.dcm")
    runner = CliRunner()
    args = ["predict", "--run", str(run), str(images), "--workers", "0", "--out", str(tmp_path / "d.csv")]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "lossy.dcm" in result.stderr and "pylibjpeg-libjpeg" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    result = runner.invoke(app, ["predict", "--run", str(run), str(images), "--workers", "0", "--skip-bad",
                                 "--out", str(tmp_path / "d.csv")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["predict", "--run", str(run), *(str(tmp_path / f"s{i}.png") for i in range(3)),
                                 "--workers", "0", "--out", str(tmp_path / "p.csv")])
    assert result.exit_code == 0, result.output
    dcm, png = pd.read_csv(tmp_path / "d.csv"), pd.read_csv(tmp_path / "p.csv")
    probs = [c for c in png.columns if c.startswith("prob_")]
    np.testing.assert_allclose(dcm[probs].to_numpy(), png[probs].to_numpy(), atol=1e-7)
    result = runner.invoke(app, ["gradcam", "--run", str(run), str(scans[0]), "--out", str(tmp_path / "cam")])
    assert result.exit_code == 0, result.output
    assert any(p.suffix == ".png" for p in (tmp_path / "cam").rglob("*"))


@pytest.mark.parametrize("window", ["abc", "40", "40,0", "40,nan"])
def test_bad_dicom_window_is_one_line(window, tmp_path):
    result = CliRunner().invoke(app, ["--dicom-window", window, "predict", "--run", str(tmp_path), str(tmp_path)])
    assert result.exit_code == 2 and "--dicom-window" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_runs_dicom_window_is_recorded_and_required_by_what_reads_the_run(tmp_path, monkeypatch):
    """A run trained under ``--dicom-window 2000,1000`` records it in config.json; predict and
    evaluate refuse in one line without it or with another, and with it predict a scan as the PNG of
    the standard's window of its values (the file's own window says otherwise)."""
    import json

    from helpers.quadrant_runs import train_quadrant_run
    from helpers.tiny_models import shrink_convnext

    shrink_convnext(monkeypatch)
    monkeypatch.setenv(WINDOW_ENV, "2000,1000")  # also restores the variable after the CLI sets it below
    run = train_quadrant_run(tmp_path / "q", epochs=1, per_class=4)
    assert json.loads((run / "config.json").read_text())["dicom_window"] == [2000.0, 1000.0]
    scan = write_dicom(tmp_path / "scan.dcm", KNOWN, center=500, width=800)
    Image.fromarray(standard_window(KNOWN.astype(np.float64), 2000, 1000).astype(np.uint8)).convert("RGB").save(
        tmp_path / "scan.png")
    runner = CliRunner()
    predict = ["predict", "--run", str(run), "--workers", "0", "--device", "cpu"]
    monkeypatch.delenv(WINDOW_ENV)
    for window in ([], ["--dicom-window", "40,400"]):
        for command in (predict + [str(scan)], ["evaluate", "--run", str(run), "--out", str(tmp_path / "e")]):
            result = runner.invoke(app, [*window, *command])
            assert result.exit_code == 2, result.output
            (line,) = result.stderr.strip().splitlines()
            assert "trained with --dicom-window 2000,1000" in line and "accvit-med --dicom-window 2000,1000" in line
    assert not (tmp_path / "e").exists()
    result = runner.invoke(app, ["--dicom-window", "2000,1000", *predict, str(scan), "--out", str(tmp_path / "d.csv")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["--dicom-window", "2000,1000", *predict, str(tmp_path / "scan.png"),
                                 "--out", str(tmp_path / "p.csv")])
    assert result.exit_code == 0, result.output
    dcm, png = pd.read_csv(tmp_path / "d.csv"), pd.read_csv(tmp_path / "p.csv")
    probs = [c for c in png.columns if c.startswith("prob_")]
    np.testing.assert_allclose(dcm[probs].to_numpy(), png[probs].to_numpy(), atol=1e-7)
