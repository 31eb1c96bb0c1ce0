"""The failure gallery (CLAIM's failure analysis): the most confident errors on test, as thumbnails.

Per data set, the ``settings.gallery`` test images on which some run of the report is most
confidently wrong (the highest predicted-class probability among its wrong predictions; ties by
path), each with its true class, every run's predicted class and probability, a thumbnail of the
image (found under the data root a run's config.json records) and, for each run whose checkpoint
is there, its Grad-CAM overlay (``accvit_med.interpret``: the same network, preprocessing and
layer as ``accvit-med gradcam``). Thumbnails are written as ``gallery/<dataset>/...png``.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image

from accvit_med.errors import UserError
from accvit_med.reports.sections import Rendered, ReportData, file_name

THUMBNAIL = 160  # pixels on the longer side
CAM_BATCH = 8


def most_confident_errors(runs, limit: int) -> list[str]:
    """The paths of the ``limit`` test images with the most confident wrong prediction of any run."""
    worst: dict[str, float] = {}
    for run in runs:
        p = run.run.predictions
        confidence = p.probs.max(axis=1)
        for i in np.flatnonzero(p.labels != p.preds):
            worst[str(p.paths[i])] = max(worst.get(str(p.paths[i]), 0.0), float(confidence[i]))
    return [path for path, _ in sorted(worst.items(), key=lambda item: (-item[1], item[0]))][:limit]


def _png(image: Image.Image) -> bytes:
    thumbnail = image.convert("RGB")
    thumbnail.thumbnail((THUMBNAIL, THUMBNAIL))
    buffer = io.BytesIO()
    thumbnail.save(buffer, format="PNG")
    return buffer.getvalue()


def _data_root(runs) -> Optional[Path]:
    from accvit_med.rundir.layout import RunDir

    for run in runs:
        if run.run.run_dir is None:
            continue
        try:
            record = RunDir(Path(run.run.run_dir)).record_if_any()
        except (ValueError, KeyError, TypeError, OSError):
            continue
        if record is not None and record.data_root:
            return Path(record.data_root)
    return None


def _overlays(run_dir: str, images: list[Path]) -> list[Image.Image]:
    """Grad-CAM of the run's best (else last) checkpoint on ``images``, for its predicted classes."""
    from accvit_med.interpret.explain import cam_overlays
    from accvit_med.interpret.gradcam import registry_target
    from accvit_med.interpret.run import load_run
    from accvit_med.rundir.layout import RunDir

    which = "best" if RunDir(Path(run_dir)).best.is_file() else "last"
    run = load_run(run_dir, checkpoint=which)
    target = registry_target(run.model_name)
    overlays = []
    for start in range(0, len(images), CAM_BATCH):
        overlays += cam_overlays(run, images[start:start + CAM_BATCH], target)[0]
    return overlays


def _has_checkpoint(run_dir: Optional[str]) -> bool:
    from accvit_med.rundir.layout import RunDir

    return run_dir is not None and (RunDir(Path(run_dir)).best.is_file() or RunDir(Path(run_dir)).last.is_file())


def _dataset_gallery(ds: str, scores, limit: int, out: Rendered) -> list[dict]:
    paths = most_confident_errors(scores.runs, limit)
    root = _data_root(scores.runs)
    folder = f"gallery/{file_name(ds)}"
    files = [root / path if root is not None else None for path in paths]
    found = [file is not None and file.is_file() for file in files]
    if paths and not all(found):
        out.notes.append(f"{ds}: {found.count(False)} of the gallery's {len(paths)} test images not found under "
                         f"the runs' data root {root}, shown without thumbnail")
    items = []
    for number, (path, file, there) in enumerate(zip(paths, files, found), start=1):
        image = None
        if there:
            try:
                with Image.open(file) as picture:
                    out.images[f"{folder}/{number:03d}.png"] = _png(picture)
                image = f"{folder}/{number:03d}.png"
            except OSError as err:  # PIL's UnidentifiedImageError among them
                out.notes.append(f"{ds}: gallery image '{file}' unreadable ({err}), shown without thumbnail")
        items.append({"path": path, "label": None, "image": image, "runs": []})
    readable = [k for k, item in enumerate(items) if item["image"] is not None]
    for run in scores.runs:
        p = run.run.predictions
        row = {str(path): i for i, path in enumerate(p.paths)}
        overlay_of: dict[int, Image.Image] = {}  # item index -> this run's Grad-CAM overlay
        if readable and _has_checkpoint(run.run.run_dir):
            try:
                overlay_of = dict(zip(readable, _overlays(run.run.run_dir, [files[k] for k in readable])))
            except (UserError, ValueError, OSError, KeyError) as err:
                out.notes.append(f"{ds}/{run.name}: no Grad-CAM in the gallery ({err})")
        for number, item in enumerate(items, start=1):
            i = row.get(item["path"])
            if i is None:
                continue
            item["label"] = str(p.labels[i])
            overlay = overlay_of.get(number - 1)
            name = None
            if overlay is not None:
                name = f"{folder}/{number:03d}_{file_name(run.name)}_gradcam.png"
                out.images[name] = _png(overlay)
            item["runs"].append({"name": run.name, "pred": str(p.preds[i]), "prob": float(p.probs[i].max()),
                                 "overlay": name})
    return items


def gallery_section(data: ReportData) -> Rendered:
    """Report section: the gallery's numbers and thumbnails (report.html shows them; report.md links them)."""
    limit = data.settings.gallery
    out = Rendered()
    if limit == 0 or data.settings.split != "test":
        reason = "no failure gallery (`--gallery 0`)" if limit == 0 else "the gallery shows errors on test only"
        out.data = {"datasets": {}, "missing": reason}
        return out
    found = {ds: _dataset_gallery(ds, scores, limit, out) for ds, scores in data.datasets.items()}
    description = (f"The test images (at most {limit} per data set) with the most confident wrong prediction of "
                   "any run, with each run's predicted class and its probability; Grad-CAM overlays (of the "
                   "predicted class) for the runs whose checkpoint is there.")
    out.data = {"datasets": found, "limit": limit, "description": description,
                "missing": "" if any(found.values()) else "no run got a test image wrong"}
    shown = sum(len(items) for items in found.values())
    if shown:
        out.markdown = ["## Failure gallery", "", f"{shown} most confident errors on test: see report.html "
                        "(thumbnails under `gallery/`).", ""]
    return out
