"""External validation: score a finished run on a data set it never trained on.

``evaluate_external(run_dir, dataset="isic2019", data_dir=...)`` (or ``split_file=`` a split CSV
of the external data, all of whose rows are used) matches the target's classes to the run's
(:mod:`accvit_med.datasets.classmap`), leaves out the target classes the run does not know and
every image the run has seen (:mod:`accvit_med.datasets.overlap`), predicts the rest and writes
``<run>/external/<name>/predictions.csv`` and ``metrics.json``. The folder is built beside its
place and moved in at the end (an interrupted evaluation leaves the previous one), and carries an
ownership marker, so a rerun replaces only a folder it can prove it wrote. ``report`` shows these
results in a section of their own, never pooled with the internal test.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Callable, Optional

import pandas as pd
from rich.console import Console
from torch import nn

from accvit_med.datasets.dicom import check_run_window
from accvit_med.datasets.transforms import Normalisation
from accvit_med.errors import UserError
from accvit_med.ownership import check_replaceable, read_marker, write_marker

EXTERNAL_KIND = "external"
EXTERNAL_FOLDER = "external"
EXTERNAL_FILES = ("predictions.csv", "metrics.json")


@dataclass
class ExternalTarget:
    """The external data: every row (path, label, group + metadata), where it lives, its classes."""

    name: str
    dataset: str
    root: Path
    frame: pd.DataFrame
    classes: list[str]
    subgroups: list[str]
    left_out: dict  # found under the root but not samples (hidden files, masks...), by reason


@dataclass
class ExternalResult:
    folder: Path
    predictions: Path
    metrics_path: Path
    metrics: dict
    lines: list[str]  # what was left out and why, one line each


def load_target(dataset: Optional[str], data_dir: Optional[str | os.PathLike],
                split_file: Optional[str | os.PathLike], name: Optional[str]) -> ExternalTarget:
    """The external data set from ``dataset`` + ``data_dir``, or from a split file (all its rows)."""
    if (dataset is None) == (split_file is None):
        raise UserError("external evaluation needs --dataset NAME (with --data-dir DIR) or --external-split FILE, "
                        "not both")
    if split_file is not None:
        from accvit_med.datasets.splits import read_split

        split = read_split(split_file, root=data_dir)
        ds = str(split.manifest["dataset"])
        return ExternalTarget(name or ds, ds, Path(split.root), split.frame.drop(columns=["split"]),
                              list(split.classes), list(split.manifest.get("subgroups", [])),
                              dict(split.manifest.get("flow", {}).get("left_out", {})))
    from accvit_med import datasets

    table = datasets.load(dataset, data_dir)
    return ExternalTarget(name or table.name, table.name, table.root, table.frame, list(table.classes),
                          list(table.subgroups), dict(table.left_out))


def _check_name(name: str) -> None:
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise UserError(f"--name '{name}' is not a folder name; pass a plain name such as isic2019")


def _load_model(run_path: Path, run_config: dict, checkpoint: str, overrides: dict,
                model_factory: Optional[Callable[[int], nn.Module]]):
    from accvit_med.rundir.checkpoints import load_checkpoint
    from accvit_med.rundir.layout import RunDir
    from accvit_med.training.recipe import FinetuneConfig

    run = RunDir(run_path)
    names = {f.name for f in fields(FinetuneConfig)}
    config = FinetuneConfig(**{k: v for k, v in run_config["recipe"].items() if k in names})
    config = replace(config, **{k: v for k, v in overrides.items() if v is not None}).validate()
    state = load_checkpoint(run.best if checkpoint == "best" else run.last)
    classes = [str(c) for c in state["classes"]]
    if model_factory is not None:
        model = model_factory(len(classes))
    else:
        from accvit_med.models import create_model

        model = create_model(config.model, num_classes=len(classes), weights=None, image_size=config.image_size)
    model.load_state_dict(state["model"])
    return model, config, classes, int(state["epoch"])


def _run_split_frame(run_config: dict) -> pd.DataFrame:
    from accvit_med.datasets.splits import read_split_frame

    recorded = run_config["split"]
    for candidate in (Path(recorded["path"]), Path(recorded["absolute_path"])):
        if candidate.is_file():
            return read_split_frame(candidate)
    raise UserError(f"the run's split '{recorded['absolute_path']}' no longer exists; external evaluation needs it "
                    "to leave out the images the run has seen; restore it")


def select_rows(target: ExternalTarget, run_classes: list[str], run_config: dict, class_map_file=None):
    """(rows kept with their run class, class match, overlap, lines saying what was left out)."""
    from accvit_med.datasets.classmap import match_classes, read_class_map
    from accvit_med.datasets.isic2019 import DEFAULT_CLASS_MAPS
    from accvit_med.datasets.overlap import find_overlap

    run_dataset = str(run_config.get("dataset", ""))
    default = DEFAULT_CLASS_MAPS.get(run_dataset) if target.dataset == "isic2019" else None
    user = read_class_map(class_map_file) if class_map_file is not None else None
    match = match_classes(target.classes, run_classes, default, user)
    frame = target.frame.reset_index(drop=True)
    lines = []
    for cls in match.unmatched:
        n = int((frame["label"] == cls).sum())
        lines.append(f"left out class {cls} of {target.name} ({n} image(s)): the run has no such class "
                     f"({match.how[cls]}); map it with --class-map if it is one of {', '.join(run_classes)}")
    overlap = find_overlap(frame, _run_split_frame(run_config), run_dataset, target.dataset)
    lines += overlap.lines()
    keep = frame["label"].map(match.mapping).notna() & ~overlap.mask
    kept = frame[keep].reset_index(drop=True)
    kept.insert(1, "run_label", kept["label"].map(match.mapping))
    if kept.empty:
        raise UserError(f"no image of {target.name} is left to evaluate once unmatched classes and images the run "
                        "has seen are left out; check --class-map and the data set")
    return kept, match, overlap, lines


def evaluate_external(
    run_dir: str | os.PathLike,
    *,
    dataset: Optional[str] = None,
    data_dir: Optional[str | os.PathLike] = None,
    split_file: Optional[str | os.PathLike] = None,
    name: Optional[str] = None,
    class_map: Optional[str | os.PathLike] = None,
    checkpoint: str = "best",
    out: Optional[str | os.PathLike] = None,
    device: str = "auto",
    workers: Optional[int] = None,
    batch_size: Optional[int] = None,
    model_factory: Optional[Callable[[int], nn.Module]] = None,
    console: Optional[Console] = None,
) -> ExternalResult:
    """Score ``run_dir`` on an external data set; see the module docstring for what is written."""
    from accvit_med.rundir.layout import read_run_config

    if checkpoint not in ("best", "last"):
        raise UserError(f"--checkpoint must be best or last, got '{checkpoint}'")
    run_path = Path(run_dir)
    run_config = read_run_config(run_path, kind="finetune")
    check_run_window(run_config.get("dicom_window"), run_path)
    target = load_target(dataset, data_dir, split_file, name)
    _check_name(target.name)
    folder = Path(out) if out is not None else run_path / EXTERNAL_FOLDER / target.name
    check_replaceable(folder, EXTERNAL_KIND)
    # Everything the user may get wrong is checked before the model is built.
    kept, match, overlap, lines = select_rows(target, [str(c) for c in run_config["classes"]], run_config, class_map)
    model, config, run_classes, epoch = _load_model(
        run_path, run_config, checkpoint, {"device": device, "workers": workers, "batch_size": batch_size},
        model_factory)
    if run_classes != [str(c) for c in run_config["classes"]]:
        raise UserError(f"checkpoint '{checkpoint}.pt' of '{run_path}' has classes {run_classes}, its config.json "
                        f"{run_config['classes']}; the run directory is damaged")
    output = _predict(model, config, target, kept, run_classes, console or Console(stderr=True),
                      Normalisation.of_weights(run_config.get("weights")))
    class_map_file = None if class_map is None else str(class_map)
    metrics, text = _outputs(output, kept, target, run_classes, run_config, match, overlap, lines,
                             {"checkpoint": checkpoint, "epoch": epoch, "class_map_file": class_map_file})
    if out is None:
        _allow_external_in_run(run_path)
    _write_atomically(folder, {"predictions.csv": text, "metrics.json": metrics})
    return ExternalResult(folder, folder / "predictions.csv", folder / "metrics.json", metrics, lines)


def _predict(model: nn.Module, config, target: ExternalTarget, kept: pd.DataFrame, run_classes: list[str],
             console: Console, normalisation: Normalisation):
    from accvit_med.datasets.torchdata import SplitImageDataset
    from accvit_med.datasets.transforms import eval_transform
    from accvit_med.devices import resolve_device
    from accvit_med.training.context import RunContext
    from accvit_med.training.part_predictions import evaluate_part

    device = resolve_device(config.device)
    model.to(device)
    index = {c: i for i, c in enumerate(run_classes)}
    metadata = {c: kept[c].tolist() for c in target.subgroups if c in kept.columns}
    data = SplitImageDataset(target.root, kept["path"].tolist(), [index[c] for c in kept["run_label"]],
                             config.image_size, eval_transform(normalisation), None, metadata=metadata)
    ctx = RunContext(device, console=console, channels_last=config.channels_last)
    return evaluate_part(model, data, config, ctx, nn.CrossEntropyLoss(), f"external {target.name}")


def _outputs(output, kept, target, run_classes, run_config, match, overlap, lines, evaluated) -> tuple[dict, str]:
    from accvit_med.reports import classification_metrics
    from accvit_med.reports.predictions import predictions_csv

    targets, preds, probs = output.targets.numpy(), output.preds.numpy(), output.probs.numpy()
    metadata = dict(output.dataset.metadata)
    metadata["target_label"] = kept["label"].tolist()  # the external data set's own class name
    text = predictions_csv(output.dataset.paths, targets, preds, probs, run_classes, metadata)
    ordinal = bool(run_config.get("ordinal", False))
    metrics = classification_metrics(targets, preds, probs, run_classes, ordinal, warn=False)
    label_counts = target.frame["label"].value_counts()
    metrics["external"] = {
        "name": target.name,
        "dataset": target.dataset,
        "data_root": str(target.root),
        "run_dataset": run_config.get("dataset"),
        "images_listed": int(len(target.frame)),
        "images_evaluated": int(len(kept)),
        "left_out_before_listing": target.left_out,
        "class_map": match.mapping,
        "class_map_how": match.how,
        "unmatched_classes": {c: int(label_counts.get(c, 0)) for c in match.unmatched},
        "overlap": overlap.to_dict(),
        "lines": lines,
        "loss": output.loss,
        **evaluated,
    }
    return metrics, text


def _allow_external_in_run(run_path: Path) -> None:
    """A run made before external/ existed lists no such folder in its marker: add it, or the
    run's --force would refuse the folder we are about to write."""
    from accvit_med.fileio import atomic_write_json
    from accvit_med.ownership import MARKER_NAME

    marker = read_marker(run_path)
    if marker is None or marker.get("contents") is None or EXTERNAL_FOLDER in marker["contents"]:
        return
    marker["contents"] = sorted({*marker["contents"], EXTERNAL_FOLDER})
    atomic_write_json(run_path / MARKER_NAME, marker)


def _write_atomically(folder: Path, files: dict) -> None:
    """Build the folder beside its place, mark it, move it in (replacing only a folder of ours)."""
    import json

    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".partial", dir=folder.parent))
    try:
        os.chmod(staging, 0o755)
        for file_name, content in files.items():
            text = (content if isinstance(content, str)
                    else json.dumps(content, indent=2, sort_keys=True, default=str) + "\n")
            (staging / file_name).write_text(text, encoding="utf-8")
        write_marker(staging, EXTERNAL_KIND, EXTERNAL_FILES)
        if folder.exists() and any(folder.iterdir()):
            check_replaceable(folder, EXTERNAL_KIND)
            retired = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".old", dir=folder.parent))
            os.replace(folder, retired / "old")
            os.replace(staging, folder)
            shutil.rmtree(retired)
        else:
            if folder.exists():
                folder.rmdir()
            os.replace(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


__all__ = ["ExternalResult", "ExternalTarget", "evaluate_external", "load_target", "select_rows"]
