"""`accvit-med evaluate --dataset isic2019`: a HAM10000 femto run scored on a tiny ISIC 2019 that,
like the real one, contains some of the run's images and further photos of its lesions.

The images and lesions to leave out are computed again here from the published CSVs with pandas;
the metrics are checked against scikit-learn on the predictions written.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, f1_score
from statsmodels.stats.proportion import proportion_confint
from typer.testing import CliRunner

from accvit_med.cli import app
from accvit_med.datasets import synthetic
from accvit_med.datasets.create_split import create_split
from accvit_med.ownership import owned_by_us, read_marker, write_marker
from accvit_med.rundir.claim import RUN_CONTENTS
from accvit_med.training.evaluate_external import load_target, select_rows

runner = CliRunner()
TO_HAM = {"MEL": "mel", "NV": "nv", "BCC": "bcc", "AK": "akiec", "BKL": "bkl", "DF": "df", "VASC": "vasc"}


@pytest.fixture(scope="module")
def ham_run(tmp_path_factory):
    """accvit_femto, 1 epoch at 224, on 21 tiny HAM10000 images (one lesion each: 1 per class per part)."""
    base = tmp_path_factory.mktemp("external")
    ham = synthetic.make_ham10000(base / "ham", per_class=3, size=(20, 16), images_per_lesion=1, seed=1)
    create_split("ham10000", ham, base / "ham.csv", progress=False)
    run = base / "run"
    result = runner.invoke(app, ["finetune", "--split", str(base / "ham.csv"), "--model", "accvit_femto",
                                 "--weights", "none", "--epochs", "1", "--batch-size", "7", "--workers", "0",
                                 "--out", str(run)])
    assert result.exit_code == 0, result.output
    isic = synthetic.make_isic2019(base / "isic", per_class=1, size=(20, 16), ham_root=ham, ham_images=6,
                                   ham_lesions=4, seed=2)
    return base, ham, run, isic


def _expected_left_out(isic: Path, split_csv: Path) -> tuple[set[str], set[str], dict[str, int]]:
    """(ids evaluated, ids of the run's images, per partition) from the CSVs alone."""
    truth = pd.read_csv(isic / "ISIC_2019_Training_GroundTruth.csv")
    meta = pd.read_csv(isic / "ISIC_2019_Training_Metadata.csv", dtype=str, keep_default_na=False)
    split = pd.read_csv(split_csv, dtype=str, keep_default_na=False)
    truth["id"] = truth["image"].str.replace("_downsampled", "", regex=False)
    truth["cls"] = truth[["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"]].idxmax(axis=1)
    lesion_of_image = meta.assign(id=meta["image"].str.replace("_downsampled", "", regex=False))[["id", "lesion_id"]]
    truth = truth.merge(lesion_of_image, on="id")
    split["id"] = split["path"].str.extract(r"(ISIC_\d+)\.jpg$", expand=False)
    seen = truth["id"].isin(split["id"])
    lesions = set(split["group"]) | set(truth.loc[seen, "lesion_id"])
    shared = truth["lesion_id"].isin(lesions) & (truth["lesion_id"] != "") & ~seen
    keep = ~seen & ~shared & (truth["cls"] != "SCC")
    partition = split.set_index("id")["split"]
    by_part = truth.loc[seen, "id"].map(partition).value_counts().to_dict()
    return set(truth.loc[keep, "id"]), set(truth.loc[seen, "id"]), {"shared_lesion": int(shared.sum()), **by_part}


@pytest.fixture(scope="module")
def evaluated(ham_run):
    _base, _ham, run, isic = ham_run
    # As a run made before external/ existed: its marker does not list the folder.
    write_marker(run, "run", [name for name in RUN_CONTENTS if name != "external"])
    return runner.invoke(app, ["evaluate", "--run", str(run), "--dataset", "isic2019", "--data-dir", str(isic),
                               "--workers", "0"])


def test_external_evaluation_leaves_out_the_runs_images_and_lesions(ham_run, evaluated):
    base, _ham, run, isic = ham_run
    result = evaluated
    assert result.exit_code == 0, result.output
    folder = run / "external" / "isic2019"
    metrics = json.loads((folder / "metrics.json").read_text())
    predictions = pd.read_csv(folder / "predictions.csv", dtype=str, keep_default_na=False)
    evaluated, seen, counts = _expected_left_out(isic, base / "ham.csv")
    assert len(seen) == 6 and counts["shared_lesion"] == 4  # the builder's overlap, found again by pandas
    got = set(predictions["path"].str.extract(r"(ISIC_\d+)(?:_downsampled)?\.jpg$", expand=False))
    assert got == evaluated
    overlap = metrics["external"]["overlap"]
    assert overlap["same_image"] == {s: counts.get(s, 0) for s in ("train", "val", "test")}
    assert overlap["same_lesion"] == counts["shared_lesion"]
    assert metrics["external"]["unmatched_classes"] == {"SCC": 1}
    assert "left out class SCC of isic2019 (1 image(s))" in result.stdout
    assert f"left out {len(seen)} image(s) of the run's split" in result.stdout
    # Labels are the run's class names (AK -> akiec ...), the ISIC name kept beside them.
    assert (predictions["label"] == predictions["meta_target_label"].map(TO_HAM)).all()
    assert {"meta_age_approx", "meta_sex", "meta_anatom_site_general"} <= set(predictions.columns)
    assert metrics["n"] == len(evaluated)
    assert metrics["accuracy"] == pytest.approx(accuracy_score(predictions["label"], predictions["pred"]))
    assert metrics["macro_f1"] == pytest.approx(
        f1_score(predictions["label"], predictions["pred"], labels=sorted(TO_HAM.values()), average="macro",
                 zero_division=0))
    assert read_marker(folder)["kind"] == "external" and "external" in read_marker(run)["contents"]
    assert owned_by_us(run, "run")  # so finetune --force may still replace the whole run


def test_class_map_brings_a_class_in_and_bad_maps_are_one_line(ham_run, tmp_path):
    base, _ham, run, isic = ham_run
    mapping = tmp_path / "map.toml"
    mapping.write_text('SCC = "akiec"\n')
    config = json.loads((run / "config.json").read_text())
    target = load_target("isic2019", isic, None, None)
    kept, match, _overlap, lines = select_rows(target, config["classes"], config, mapping)
    truth = pd.read_csv(isic / "ISIC_2019_Training_GroundTruth.csv")
    scc = set(truth.loc[truth["SCC"] == 1.0, "image"])
    assert match.mapping["SCC"] == "akiec" and match.how["SCC"] == "--class-map"
    assert set(kept.loc[kept["label"] == "SCC", "path"].map(lambda p: Path(p).stem)) == scc
    assert (kept.loc[kept["label"] == "SCC", "run_label"] == "akiec").all()
    assert not any(line.startswith("left out class") for line in lines)
    out = tmp_path / "mapped"

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"SCC": "squamous"}))
    refused = runner.invoke(app, ["evaluate", "--run", str(run), "--dataset", "isic2019", "--data-dir", str(isic),
                                  "--class-map", str(bad), "--out", str(tmp_path / "never")])
    assert refused.exit_code == 2 and "maps to 'squamous', which is not a class of the run" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and not (tmp_path / "never").exists()
    # A folder holding something we did not write is never replaced.
    write_marker(out, "external", ["predictions.csv", "metrics.json"])
    (out / "notes.txt").write_text("mine")
    again = runner.invoke(app, ["evaluate", "--run", str(run), "--dataset", "isic2019", "--data-dir", str(isic),
                                "--class-map", str(mapping), "--out", str(out)])
    assert again.exit_code == 2 and "notes.txt" in again.stderr and (out / "notes.txt").read_text() == "mine"


def test_report_shows_the_flow_the_subgroups_and_external_results_apart(ham_run, evaluated, tmp_path):
    base, _ham, run, _isic = ham_run
    assert evaluated.exit_code == 0, evaluated.output
    out = tmp_path / "report"
    result = runner.invoke(app, ["report", str(run), "--out", str(out), "--n-boot", "50"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    split = pd.read_csv(base / "ham.csv", dtype=str, keep_default_na=False)
    # The test predictions carry the split's metadata, row for row.
    test = pd.read_csv(run / "predictions_test.csv", dtype=str, keep_default_na=False).merge(split, on="path")
    for column in ("age", "sex", "localization", "dx_type"):
        assert (test[f"meta_{column}"] == test[column]).all()
    # Flow: the manifest's counts, which are the split CSV's.
    flow = report["sections"]["flow"]["ham10000"]["flow"]
    crosstab = pd.crosstab(split["split"], split["label"])
    expected_counts = {s: {c: int(crosstab.at[s, c]) for c in crosstab.columns} for s in ("train", "val", "test")}
    assert flow["counts"] == expected_counts
    parts = report["sections"]["flow"]["ham10000"]["characteristics"]["partitions"]
    ages = pd.to_numeric(split.loc[split["split"] == "train", "age"], errors="coerce").dropna()
    train_age = parts["train"]["age"]
    assert train_age["mean"] == pytest.approx(ages.mean()) and train_age["sd"] == pytest.approx(ages.std())
    assert (out / "figures" / "ham10000" / "flow.png").is_file()
    # One subgroup table per clinical task HAM10000 declares, each with the task's sensitivity.
    tables = report["sections"]["subgroups"]
    assert {"ham10000/accvit_femto/melanoma", "ham10000/accvit_femto/malignant"} <= set(tables)
    assert tables["ham10000/accvit_femto/malignant"]["task"]["positive"] == ["mel", "bcc", "akiec"]
    # External: its own section, its own numbers; the internal summary still counts the 7 test images.
    external = report["sections"]["external"]["evaluations"]
    metrics = json.loads((run / "external" / "isic2019" / "metrics.json").read_text())
    assert len(external) == 1 and external[0]["n"] == metrics["n"]
    correct = round(metrics["accuracy"] * metrics["n"])
    assert (external[0]["accuracy"]["low"], external[0]["accuracy"]["high"]) == pytest.approx(
        proportion_confint(correct, metrics["n"], method="wilson"))
    assert report["datasets"]["ham10000"]["runs"]["accvit_femto"]["n"] == len(split[split["split"] == "test"])
    text = (out / "report.md").read_text()
    assert text.index("## External validation") > text.index("## Summary")


def test_overlap_follows_lesions_the_split_names_under_another_group(tmp_path):
    """No model: the rows chosen for a run's config, when a group of the split was renamed (as a
    group-aware split renames groups it joins), against the same computation in pandas."""
    ham = synthetic.make_ham10000(tmp_path / "ham", per_class=8, size=(16, 12), seed=5)
    create_split("ham10000", ham, tmp_path / "ham.csv", progress=False)
    isic = synthetic.make_isic2019(tmp_path / "isic", per_class=1, size=(16, 12), ham_root=ham, ham_images=24,
                                   ham_lesions=6, seed=3)
    split = pd.read_csv(tmp_path / "ham.csv", dtype=str, keep_default_na=False)
    meta = pd.read_csv(isic / "ISIC_2019_Training_Metadata.csv", dtype=str, keep_default_na=False)
    seen_image = meta["image"].isin(split["path"].str.extract(r"(ISIC_\d+)\.jpg$", expand=False))
    # A lesion with one photo in the split and another only in ISIC 2019: once its group is renamed
    # in the split, only ISIC's metadata (the lesion of the run's image) still ties the two.
    both = sorted(set(meta.loc[seen_image, "lesion_id"]) & set(meta.loc[~seen_image, "lesion_id"]))
    assert both, "the layout should hold a lesion photographed in both sets"
    renamed = both[0]
    split.loc[split["group"] == renamed, "group"] = "joined-group"
    split.to_csv(tmp_path / "edited.csv", index=False)
    config = {"dataset": "ham10000", "classes": sorted(TO_HAM.values()),
              "split": {"path": str(tmp_path / "edited.csv"), "absolute_path": str(tmp_path / "edited.csv")}}
    kept, _match, overlap, _lines = select_rows(load_target("isic2019", isic, None, None), config["classes"], config)
    evaluated, seen, counts = _expected_left_out(isic, tmp_path / "ham.csv")
    assert set(kept["path"].str.extract(r"(ISIC_\d+)(?:_downsampled)?\.jpg$", expand=False)) == evaluated
    assert overlap.same_image == {s: counts[s] for s in ("train", "val", "test")}
    assert min(overlap.same_image.values()) > 0 and overlap.same_lesion == counts["shared_lesion"] > 0
