"""report.html in a real browser: a small made-up HAM10000 study rendered in headless Chromium.

The page must decode every image, fetch nothing (a strict Content-Security-Policy, and the DevTools
network log lists no request but the file itself), show report.json's headline numbers, be more
than a blank screenshot, and mark a checklist item covered only where its section is present.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers.services import missing_commands, require_service
from PIL import Image

from accvit_med.datasets import synthetic
from accvit_med.datasets.create_split import create_split
from accvit_med.reports import write_predictions, write_report

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
# A command line that would inject markup if the page did not escape what config.json says.
HOSTILE = "<img src=x onerror=alert(1)>"
SECTION_ORDER = ["summary", "reproducibility", "flow", "tables", "operating_points", "calibration", "subgroups",
                 "external", "paired", "learning_curves", "confusion", "roc", "gallery", "notes", "checklist"]


def _predictions(rows: pd.DataFrame, classes: list[str], skill: float, seed: int):
    y = rows["label"].map(classes.index).to_numpy()
    logits = np.random.default_rng(seed).normal(size=(len(rows), len(classes)))
    logits[np.arange(len(rows)), y] += skill
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, probs.argmax(axis=1), probs


def make_study(root: Path) -> list[Path]:
    """Two made-up runs (no training) on a synthetic HAM10000 split: config.json naming the split and
    data root, validation and test predictions with the split's metadata, history.csv."""
    ham = synthetic.make_ham10000(root / "ham", per_class=6, size=(48, 36), images_per_lesion=1, seed=1)
    split_csv = root / "ham.csv"
    create_split("ham10000", ham, split_csv, progress=False)
    split = pd.read_csv(split_csv, dtype=str, keep_default_na=False)
    manifest = json.loads(split_csv.with_suffix(".json").read_text())
    classes, columns = list(manifest["classes"]), list(manifest["subgroups"])
    sha = hashlib.sha256(split_csv.read_bytes()).hexdigest()
    runs = []
    for index, (model, skill) in enumerate((("accvit_tiny", 2.5), ("convnext_tiny", 0.8))):
        run = root / "runs" / model
        run.mkdir(parents=True)
        config = {"model": model, "dataset": "ham10000", "classes": classes, "ordinal": False,
                  "split": {"path": str(split_csv), "absolute_path": str(split_csv), "sha256": sha},
                  "data_root": str(ham), "recipe": {"model": model, "seed": 7, "epochs": 3, "lr": 1e-3},
                  "weights": {"spec": "none"}, "device": "cpu", "versions": {"accvit-med": "test"},
                  "command": ["accvit-med", "finetune", "--name", HOSTILE]}
        (run / "config.json").write_text(json.dumps(config))
        for part in ("val", "test"):
            rows = split[split["split"] == part]
            y, pred, probs = _predictions(rows, classes, skill, seed=10 * index + len(part))
            write_predictions(run / f"predictions_{part}.csv", rows["path"].tolist(), y, pred, probs, classes,
                              metadata={c: rows[c].tolist() for c in columns})
        (run / "history.csv").write_text("epoch,train_loss,train_acc,val_loss,val_acc\n"
                                         "1,1.9,0.2,1.8,0.25\n2,1.5,0.4,1.6,0.35\n3,1.2,0.55,1.5,0.4\n")
        runs.append(run)
    return runs


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("html_study")
    runs = make_study(root)
    result = write_report(runs, root / "report", seed=1, n_boot=60, gallery=5)
    return result, json.loads((root / "report" / "report.json").read_text())


@pytest.fixture(scope="module")
def browser():
    require_service("chromium", missing_commands(CHROMIUM, CHROMEDRIVER),
                    how="install Debian's chromium and chromium-driver packages")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--hide-scrollbars", "--window-size=1366,900"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def _requests(driver) -> list[str]:
    """Every URL the page asked for, from the DevTools network events."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def _headline_expected(report: dict) -> dict[str, list[str]]:
    """The summary rows as report.json's numbers say they should read (independent formatting)."""
    expected = {}
    for ds, entry in report["datasets"].items():
        for name, m in entry["runs"].items():
            acc, f1 = m["wilson"]["accuracy"], m["ci"]["macro_f1"]
            expected[f"{ds} / {name}"] = [
                str(m["n"]), f"{100 * m['accuracy']:.2f} [{100 * acc['low']:.2f}, {100 * acc['high']:.2f}]",
                f"{100 * m['macro_f1']:.2f} [{100 * f1['low']:.2f}, {100 * f1['high']:.2f}]"]
    return expected


def test_report_html_in_chromium(study, browser, tmp_path):
    from selenium.webdriver.common.by import By

    result, report = study
    page = result.out_dir / "report.html"
    assert "report.html" in result.files and "[report.html](report.html)" in (result.out_dir / "report.md").read_text()
    # Mailed alone: the page must not need the folder it was written in.
    alone = tmp_path / "mailed" / "report.html"
    alone.parent.mkdir()
    shutil.copy(page, alone)
    browser.get_log("performance")  # drop what an earlier page left
    browser.get(alone.as_uri())

    images = browser.find_elements(By.TAG_NAME, "img")
    assert len(images) >= 20
    broken = [i.get_attribute("alt") for i in images
              if not browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", i)]
    assert not broken
    assert all(i.get_attribute("src").startswith("data:image/") for i in images)

    requests = _requests(browser)
    assert requests and all(url == alone.as_uri() or url.startswith("data:") for url in requests), requests
    resources = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert all(name.startswith("data:") for name in resources), resources
    refused = [e["message"] for e in browser.get_log("browser") if "Content Security Policy" in e["message"]]
    assert not refused, refused

    rows = {}
    for row in browser.find_elements(By.CSS_SELECTOR, "#headline tbody tr"):
        label = row.find_element(By.TAG_NAME, "th").text
        rows[label] = [" ".join(cell.text.split()) for cell in row.find_elements(By.TAG_NAME, "td")][:3]
    assert rows == _headline_expected(report)

    sections = browser.find_elements(By.CSS_SELECTOR, "main > section")
    assert [s.get_attribute("id") for s in sections] == SECTION_ORDER
    present = {s.get_attribute("id") for s in sections if not s.find_elements(By.CSS_SELECTOR, "p.missing")}
    assert {"flow", "calibration", "subgroups", "operating_points", "gallery", "learning_curves"} <= present
    assert "external" not in present  # the study has no external evaluation
    covered = {link.get_attribute("href").split("#")[1]
               for link in browser.find_elements(By.CSS_SELECTOR, "table.checklist tr.covered a")}
    assert covered == present & {"flow", "reproducibility", "summary", "tables", "confusion", "operating_points",
                                 "calibration", "subgroups", "external", "paired", "learning_curves", "gallery"}
    assert HOSTILE in browser.find_element(By.ID, "reproducibility").text  # shown as text, not markup
    cases = browser.find_elements(By.CSS_SELECTOR, "#gallery .case")
    assert len(cases) == sum(len(items) for items in report["sections"]["gallery"]["datasets"].values()) > 0

    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1366, min(height, 16000))
    shot = tmp_path / "report.png"
    shot.write_bytes(browser.get_screenshot_as_png())
    with Image.open(shot) as image:
        grey = np.asarray(image.convert("L"), dtype=np.float64)
    assert grey.std() > 20 and (grey < 128).mean() > 0.01  # text and figures, not a blank page


def test_page_escapes_and_declares_its_policy(study):
    result, report = study
    text = (result.out_dir / "report.html").read_text()
    assert HOSTILE not in text and "&lt;img src=x onerror=alert(1)&gt;" in text
    policy = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]+)">', text)
    assert policy and html.unescape(policy[1]).startswith("default-src 'none'; img-src data:;")
    assert "http://" not in text and "https://" not in text


def test_gallery_shows_the_gradcam_of_the_runs_checkpoint(tmp_path, monkeypatch):
    """A trained run with its checkpoint: the gallery's errors, classes, probabilities and overlays
    are those `accvit-med gradcam --misclassified` finds and draws (thumbnails of its overlays)."""
    import csv

    from helpers.quadrant_runs import train_quadrant_run
    from helpers.tiny_models import shrink_convnext
    from typer.testing import CliRunner

    from accvit_med.cli import app
    from accvit_med.reports.gallery import THUMBNAIL

    shrink_convnext(monkeypatch)
    run = train_quadrant_run(tmp_path / "quadrant", epochs=1, per_class=14)
    write_report([run], tmp_path / "report", n_boot=0, gallery=3)
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    [items] = report["sections"]["gallery"]["datasets"].values()
    cams = tmp_path / "gradcam"
    done = CliRunner().invoke(app, ["gradcam", "--run", str(run), "--misclassified", "--limit", "3",
                                    "--out", str(cams), "--device", "cpu"])
    assert done.exit_code == 0, done.output
    expected = list(csv.DictReader((cams / "gradcam.csv").open()))
    assert len(items) == len(expected) == 3
    for item, row in zip(items, expected):
        [shown] = item["runs"]
        assert row["path"].endswith(item["path"]) and (shown["pred"], item["label"]) == (row["pred"], row["label"])
        assert shown["prob"] == pytest.approx(float(row["prob_pred"]), abs=1e-4)
        with Image.open(cams / row["overlay"]) as overlay, Image.open(tmp_path / "report" / shown["overlay"]) as thumb:
            overlay = overlay.convert("RGB")
            overlay.thumbnail((THUMBNAIL, THUMBNAIL))
            assert thumb.size == overlay.size
            difference = np.abs(np.asarray(thumb, dtype=int) - np.asarray(overlay, dtype=int))
            assert difference.mean() < 1.0
        assert (tmp_path / "report" / item["image"]).is_file()
    page = (tmp_path / "report" / "report.html").read_text()
    assert page.count('alt="Grad-CAM of convnext_tiny"') == 3


def test_backquoted_spans_become_code_and_stay_escaped():
    from accvit_med.reports.html import code_spans

    assert str(code_spans("see `split --subgroups` <b>")) == "see <code>split --subgroups</code> &lt;b&gt;"
    assert str(code_spans("`<script>` and `x")) == "`&lt;script&gt;` and `x"  # unpaired: left as text
