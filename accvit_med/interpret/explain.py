"""Grad-CAM of one or several runs on the same images: overlays, Figure 4 grids and an index CSV.

Output folder:
```
<out>/grid.png                 rows = images, columns = input + one overlay per run
                               (grid_001.png, grid_002.png, ... when there are more rows than a page)
<out>/<run>/<NNN>_<stem>.png   one overlay per image and run, at the run's input size
<out>/gradcam.csv              path,label,run,explained,pred,prob_pred,overlay
```
"""

from __future__ import annotations

import csv
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image

from accvit_med.errors import UserError
from accvit_med.fileio import atomic_write_text
from accvit_med.interpret.gradcam import CamBatch, CamTarget, grad_cam, registry_target
from accvit_med.interpret.images import check_readable
from accvit_med.interpret.overlay import GridRow, blend, save_grid, save_png
from accvit_med.interpret.run import LoadedRun
from accvit_med.progress import progress_bar, show_progress
from accvit_med.rundir.layout import RunDir

CSV_COLUMNS = ("path", "label", "run", "explained", "pred", "prob_pred", "overlay")


@dataclass(frozen=True)
class CamImage:
    """An image to explain and, when known (test-set errors), its true class.

    ``root``: the data root (or folder given) it was found under, whose symlink rule applies.
    """

    path: Path
    label: Optional[str] = None
    root: Optional[Path] = None


@dataclass
class GradcamResult:
    grids: list[Path]
    table: Path
    overlays: int


def misclassified_images(run: LoadedRun, limit: Optional[int] = None,
                         data_dir: Optional[str | os.PathLike] = None) -> list[CamImage]:
    """The test images ``run`` got wrong, most confident errors first, at most ``limit`` of them.

    Paths in predictions_test.csv are relative to the data root recorded in config.json
    (``data_dir`` replaces it when the data has moved).
    """
    from accvit_med.reports.predictions import read_predictions

    file = RunDir(run.path).predictions("test")
    if not file.is_file():
        raise UserError(f"run '{run.path}' has no predictions_test.csv; finish training "
                        "or run accvit-med evaluate first")
    predictions = read_predictions(file)
    wrong = np.flatnonzero(predictions.labels != predictions.preds)
    confidence = predictions.probs[wrong].max(axis=1)
    wrong = wrong[np.argsort(-confidence, kind="stable")][:limit]
    root = Path(data_dir) if data_dir is not None else Path(run.record.data_root)
    images = [CamImage(root / predictions.paths[i], str(predictions.labels[i]), root) for i in wrong]
    missing = next((image.path for image in images if not image.path.is_file()), None)
    if missing is not None:
        raise UserError(f"test image '{missing}' of run '{run.path}' does not exist; pass --data-dir if the data moved")
    return images


def _run_labels(runs: Sequence[LoadedRun]) -> list[str]:
    """Column titles: ``model/run-folder``, or the full paths when those would repeat."""
    short = [run.label for run in runs]
    return short if len(set(short)) == len(short) else [str(run.path) for run in runs]


def _folder_names(labels: Sequence[str]) -> list[str]:
    """One distinct, file-system-safe folder name per run label."""
    names: list[str] = []
    for label in labels:
        base = re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("_") or "run"
        name, k = base, 2
        while name in names:
            name, k = f"{base}_{k}", k + 1
        names.append(name)
    return names


def _row_title(image: CamImage) -> str:
    # The parent folder too: class folders often hold files with the same names (img_0001.png).
    name = f"{image.path.parent.name}/{image.path.name}" if image.path.parent.name else image.path.name
    return name if image.label is None else f"{name}\ntrue: {image.label}"


def _explained_index(run: LoadedRun, class_name: Optional[str]) -> Optional[int]:
    if class_name is None:
        return None
    if class_name not in run.classes:
        raise UserError(f"--class '{class_name}' is not a class of run '{run.path}' ({', '.join(run.classes)})")
    return run.classes.index(class_name)


@dataclass
class _Cell:
    """One image explained by one run: the overlay, its grid caption and its gradcam.csv row."""

    overlay: Image.Image
    caption: str
    record: list[str]


def cam_overlays(run: LoadedRun, paths: Sequence[str | os.PathLike], target: CamTarget,
                 class_index: Optional[int] = None, alpha: float = 0.5) -> tuple[list[Image.Image], CamBatch]:
    """Grad-CAM of ``run`` on one batch of images, as the run sees them: each overlay and the batch's
    maps, explained classes and probabilities."""
    pictures = [run.load_image(path) for path in paths]
    batch = torch.stack([run.normalise(picture) for picture in pictures]).to(run.device)
    cams = grad_cam(run.model, batch, target, class_index)
    return [blend(picture, cams.maps[k].numpy(), alpha) for k, picture in enumerate(pictures)], cams


def _explain_batch(run: LoadedRun, label: str, folder: str, target: CamTarget, class_index: Optional[int],
                   images: Sequence[CamImage], numbers: Sequence[int], out: Path, alpha: float) -> list[_Cell]:
    """Grad-CAM of ``run`` on a batch of images; each overlay is written as ``<folder>/<NNN>_<stem>.png``."""
    overlays, cams = cam_overlays(run, [image.path for image in images], target, class_index, alpha)
    cells = []
    for k, (image, overlay, number) in enumerate(zip(images, overlays, numbers)):
        probabilities = cams.probabilities[k]
        pred = run.classes[int(probabilities.argmax())]
        confidence = float(probabilities.max())
        explained = run.classes[int(cams.classes[k])]
        name = f"{folder}/{number:03d}_{image.path.stem}.png"
        save_png(overlay, out / name)
        caption = f"pred {pred} ({confidence:.2f})"
        if class_index is not None:
            caption = f"CAM of {explained}; {caption}"
        record = [str(image.path), image.label or "", label, explained, pred, f"{confidence:.6g}", name]
        cells.append(_Cell(overlay, caption, record))
    return cells


def explain_images(
    runs: Sequence[LoadedRun],
    images: Sequence[CamImage],
    out: str | os.PathLike,
    class_name: Optional[str] = None,
    targets: Optional[Sequence[CamTarget]] = None,
    batch_size: int = 8,
    alpha: float = 0.5,
    rows_per_grid: int = 8,
    progress: bool = True,
) -> GradcamResult:
    """Grad-CAM of every run on every image (each run's predicted class unless ``class_name``).

    targets: one Grad-CAM layer per run (default: the registry's layer of each run's model).
    Work goes one grid page at a time, so memory stays bounded however many images there are.
    """
    if not runs:
        raise UserError("no runs given; pass --run DIR at least once")
    if not images:
        raise UserError("no images to explain; pass image files or folders, or --misclassified")
    if batch_size < 1 or rows_per_grid < 1:
        raise UserError("--batch-size and --rows-per-grid must be at least 1")
    if not 0.0 <= alpha <= 1.0:
        raise UserError(f"--alpha must be between 0 and 1, got {alpha}")
    targets = list(targets) if targets is not None else [registry_target(run.model_name) for run in runs]
    if len(targets) != len(runs):
        raise ValueError(f"{len(targets)} Grad-CAM targets for {len(runs)} runs")
    class_indices = [_explained_index(run, class_name) for run in runs]
    check_readable([image.path for image in images], skip_bad=False, progress=progress,
                   roots={image.path: image.root for image in images})

    out = Path(out)
    labels = _run_labels(runs)
    folders = _folder_names(labels)
    pages = [images[i:i + rows_per_grid] for i in range(0, len(images), rows_per_grid)]
    grids = [out / "grid.png"] if len(pages) == 1 else [out / f"grid_{p + 1:03d}.png" for p in range(len(pages))]
    records: list[list[str]] = []
    with progress_bar(show_progress(progress)) as bar:
        task = bar.add_task("grad-cam", total=len(images) * len(runs))
        for page_number, page in enumerate(pages):
            first = page_number * rows_per_grid + 1
            columns: list[list[_Cell]] = []  # one per run, one cell per image of the page
            for run, label, folder, target, class_index in zip(runs, labels, folders, targets, class_indices):
                cells: list[_Cell] = []
                for start in range(0, len(page), batch_size):
                    chunk = page[start:start + batch_size]
                    numbers = range(first + start, first + start + len(chunk))
                    cells += _explain_batch(run, label, folder, target, class_index, chunk, numbers, out, alpha)
                    bar.advance(task, len(chunk))
                records += [cell.record for cell in cells]
                columns.append(cells)
            rows = [GridRow(runs[0].load_image(image.path), _row_title(image),
                            [column[r].overlay for column in columns], [column[r].caption for column in columns])
                    for r, image in enumerate(page)]
            save_grid(rows, labels, grids[page_number])
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    writer.writerows(records)
    table = out / "gradcam.csv"
    atomic_write_text(table, buffer.getvalue())
    return GradcamResult(grids, table, len(records))
