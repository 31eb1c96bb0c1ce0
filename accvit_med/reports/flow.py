"""Data flow and characteristics of each partition (STARD 19 and 20, CLAIM 33-34).

The flow is read from the split's manifest, which ``accvit-med split`` fills in: image files
found under the data root, those left out by reason (hidden files, further copies of an image,
files the label file does not list, masks, unreadable images), and the train / val / test
counts per class. It is drawn as boxes and arrows and given as a table. The characteristics
table gives, per partition, the class counts and, where the split kept metadata, the age (mean
and sd) and the share of each level of the other metadata (sex, site, eye...).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch

from accvit_med.reports.run_sources import RunSplit, rendered, run_split

SPLITS = ("train", "val", "test")
AGE_COLUMNS = ("age", "age_approx")


@dataclass
class DataFlow:
    dataset: str
    split_file: str
    images_found: Optional[int]  # None: the manifest predates flow records
    left_out: dict[str, int]
    samples: int
    counts: dict[str, dict[str, int]]  # split -> class -> images
    classes: list[str]
    grouped: bool
    byte_identical_files_grouped: int = 0
    unreadable_by_class: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def compute_flow(split: RunSplit) -> DataFlow:
    manifest, frame = split.manifest, split.frame
    classes = [str(c) for c in manifest.get("classes", sorted(set(frame["label"])))]
    crosstab = pd.crosstab(frame["split"], frame["label"])
    counts = {s: {c: int(crosstab.at[s, c]) if s in crosstab.index and c in crosstab.columns else 0 for c in classes}
              for s in SPLITS}
    flow = manifest.get("flow", {})
    return DataFlow(
        dataset=str(manifest.get("dataset", "unknown")),
        split_file=str(split.path),
        images_found=flow.get("images_found"),
        left_out={str(k): int(v) for k, v in flow.get("left_out", {}).items()},
        samples=len(frame),
        counts=counts,
        classes=classes,
        grouped=bool(manifest.get("grouped", False)),
        byte_identical_files_grouped=int(flow.get("byte_identical_files_grouped", 0)),
        unreadable_by_class={str(k): int(v) for k, v in flow.get("unreadable_by_class", {}).items()},
    )


def render_flow_table(flow: DataFlow) -> list[str]:
    lines = ["| step | images |", "|:--|--:|"]
    lines.append(f"| image files found | {'–' if flow.images_found is None else flow.images_found} |")
    for reason, n in flow.left_out.items():
        lines.append(f"| left out: {reason} | {n} |")
    lines.append(f"| in the split | {flow.samples} |")
    for s in SPLITS:
        per_class = ", ".join(f"{c} {n}" for c, n in flow.counts[s].items())
        lines.append(f"| {s} | {sum(flow.counts[s].values())} ({per_class}) |")
    return lines


def flow_figure(flow: DataFlow) -> Figure:
    """Boxes and arrows: found -> left out (by reason) -> in the split -> train / val / test."""
    figure = Figure(figsize=(9.0, 6.2))
    ax = figure.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, 100)
    ax.set_ylim(0, 100)
    ax.axis("off")

    def box(x: float, y: float, w: float, h: float, text: str, colour: str = "#e8eef7") -> None:
        ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.6",
                                    facecolor=colour, edgecolor="#333333", linewidth=1.0))
        ax.text(x, y, text, ha="center", va="center", fontsize=9, wrap=True)

    def arrow(x0: float, y0: float, x1: float, y1: float) -> None:
        ax.annotate("", xy=(x1, y1), xytext=(x0, y0), arrowprops={"arrowstyle": "-|>", "color": "#333333", "lw": 1.2})

    found = "image files found" if flow.images_found is None else f"{flow.images_found} image files found"
    box(32, 90, 40, 8, f"{flow.dataset}: {found}")
    left = "\n".join(f"{n} {reason}" for reason, n in flow.left_out.items()) or "none"
    n_left = sum(flow.left_out.values())
    box(78, 72, 36, 6 + 3.2 * max(1, len(flow.left_out)), f"left out ({n_left}):\n{left}", "#f7e8e8")
    arrow(32, 85.5, 32, 58.5)
    arrow(32, 72, 59.5, 72)
    grouping = "group-aware split" if flow.grouped else "image-level split"
    n_identical = flow.byte_identical_files_grouped
    extra = f"\n{n_identical} byte-identical files kept, grouped" if n_identical else ""
    box(32, 54, 40, 8, f"{flow.samples} images in the split ({grouping}){extra}")
    for i, s in enumerate(SPLITS):
        x = 17 + 33 * i
        per_class = flow.counts[s]
        lines = [f"{s}: {sum(per_class.values())}"] + [f"{c} {n}" for c, n in per_class.items()]
        height = 4 + 2.6 * len(lines)
        arrow(32, 49.5, x, 40)
        box(x, 38 - height / 2, 26, height, "\n".join(lines), "#e9f5e9")
    return figure


def characteristics(split: RunSplit) -> dict:
    """Per partition (and all): n, class counts, age mean and sd, shares of each metadata level."""
    frame, columns = split.frame, list(split.manifest.get("subgroups", []))
    classes = [str(c) for c in split.manifest.get("classes", sorted(set(frame["label"])))]
    result = {}
    for part in (*SPLITS, "all"):
        rows = frame if part == "all" else frame[frame["split"] == part]
        entry: dict = {"n": len(rows), "classes": {c: int((rows["label"] == c).sum()) for c in classes}}
        for column in columns:
            if column.lower() in AGE_COLUMNS:
                ages = pd.to_numeric(rows[column], errors="coerce")
                known = ages.dropna()
                entry[column] = {"mean": None if known.empty else float(known.mean()),
                                 "sd": None if len(known) < 2 else float(known.std(ddof=1)),
                                 "unknown": int(ages.isna().sum())}
            elif column in rows.columns:
                values = rows[column].replace("", "unknown")
                entry[column] = {str(k): int(v) for k, v in values.value_counts().sort_index().items()}
        result[part] = entry
    return {"columns": columns, "partitions": result}


def render_characteristics(table: dict) -> list[str]:
    parts = table["partitions"]
    header = ["characteristic", *SPLITS, "all"]
    lines = ["| " + " | ".join(header) + " |", "|:--|" + "--:|" * (len(header) - 1)]
    lines.append("| images | " + " | ".join(str(parts[p]["n"]) for p in header[1:]) + " |")

    def share(p: str, n: int) -> str:
        total = parts[p]["n"]
        return f"{n} ({100 * n / total:.1f}%)" if total else "0"

    for cls in parts["all"]["classes"]:
        lines.append(f"| class {cls} | " + " | ".join(share(p, parts[p]["classes"][cls]) for p in header[1:]) + " |")
    for column in table["columns"]:
        if column.lower() in AGE_COLUMNS:
            cells = []
            for p in header[1:]:
                a = parts[p][column]
                mean = "–" if a["mean"] is None else f"{a['mean']:.1f}"
                sd = "–" if a["sd"] is None else f"{a['sd']:.1f}"
                cells.append(f"{mean} ± {sd} ({a['unknown']} unknown)")
            lines.append(f"| {column}, mean ± sd | " + " | ".join(cells) + " |")
            continue
        for level in parts["all"][column]:
            lines.append(f"| {column}: {level} | "
                         + " | ".join(share(p, parts[p][column].get(level, 0)) for p in header[1:]) + " |")
    return lines


def _splits_of(scores) -> list[tuple[str, RunSplit]]:
    """Each distinct split (by file) the runs of one data set were trained on."""
    seen, found = set(), []
    for run in scores.runs:
        split = run_split(run.run.run_dir)
        if split is not None and str(split.path) not in seen:
            seen.add(str(split.path))
            found.append((run.name, split))
    return found


def flow_section(data):
    """Report section: per data set, the flow figure and table, and the characteristics table."""
    from accvit_med.reports.run_sources import file_name

    markdown, figures, numbers, notes = [], {}, {}, []
    for ds, scores in data.datasets.items():
        splits = _splits_of(scores)
        if not splits:
            notes.append(f"{ds}: no run directory with its split file, so no data flow or characteristics")
            continue
        for i, (run_name, split) in enumerate(splits):
            flow = compute_flow(split)
            table = characteristics(split)
            suffix = "" if i == 0 else f"_{i + 1}"
            path = f"figures/{file_name(ds)}/flow{suffix}.png"
            figures[path] = lambda flow=flow: flow_figure(flow)
            numbers[f"{ds}{suffix}"] = {"flow": flow.to_dict(), "characteristics": table}
            markdown += [f"### {ds}: data flow", "",
                         f"Split file `{split.path}` (used by {run_name}). Counts from its manifest.", "",
                         f"![data flow of {ds}]({path})", "", *render_flow_table(flow), "",
                         f"### {ds}: characteristics of each partition", "", *render_characteristics(table), ""]
            if flow.images_found is None:
                notes.append(f"{ds}: split manifest written before flow records; what was left out is unknown "
                             "(re-create the split to record it)")
    if not markdown:
        return rendered(notes=notes)
    return rendered(markdown=["## Data flow and partitions", "", *markdown], figures=figures, data=numbers, notes=notes)
