"""The report's figures: confusion matrices, reliability diagram, ROC curves, Figure 5's grid,
learning curves (per run, and all runs of a data set overlaid).

Plotting functions return a :class:`matplotlib.figure.Figure` (no pyplot, no global state), so
callers and tests can inspect axes and labels before :func:`save_png` writes them. PNGs carry no
software version or date, so the same inputs give byte-identical files.
"""

from __future__ import annotations

import io
import os
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from accvit_med.fileio import atomic_write_bytes

_DPI = 120


def save_png(figure: Figure, path: str | os.PathLike) -> None:
    """Write ``figure`` as a PNG atomically, without metadata that would vary between runs."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_DPI, metadata={"Software": None}, bbox_inches="tight")
    atomic_write_bytes(path, buffer.getvalue())


def _side(k: int) -> float:
    return max(3.5, 0.55 * k + 2.0)


def draw_confusion(ax, cm: np.ndarray, classes: Sequence[str], normalize: bool, title: str) -> None:
    """Draw one confusion matrix on ``ax``: colour = row-normalised rate, text = count or rate."""
    cm = np.asarray(cm, dtype=np.float64)
    rows = cm.sum(axis=1, keepdims=True)
    rates = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    # Colour by the row-normalised rate even for counts, so rare classes stay readable.
    ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0)
    k = len(classes)
    ax.set_xticks(range(k), labels=list(classes), rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(k), labels=list(classes))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize="medium")
    size = "small" if k <= 7 else "x-small"
    for i in range(k):
        for j in range(k):
            text = f"{rates[i, j]:.2f}" if normalize else f"{int(cm[i, j])}"
            ax.text(j, i, text, ha="center", va="center", fontsize=size,
                    color="white" if rates[i, j] > 0.5 else "black")


def confusion_figure(cm: np.ndarray, classes: Sequence[str], normalize: bool = False,
                     title: str = "") -> Figure:
    """A confusion matrix as counts (``normalize=False``) or row-normalised rates."""
    side = _side(len(classes))
    figure = Figure(figsize=(side, side))
    draw_confusion(figure.add_subplot(), cm, classes, normalize,
                   title + (" (row-normalised)" if normalize else " (counts)"))
    return figure


def reliability_figure(bins: dict, title: str = "") -> Figure:
    """Reliability diagram: accuracy per confidence bin against the diagonal, with the ECE."""
    figure = Figure(figsize=(4.5, 4.5))
    ax = figure.add_subplot()
    edges = bins["edges"]
    width = np.diff(edges)
    filled = bins["count"] > 0
    ax.bar(edges[:-1][filled], bins["accuracy"][filled], width=width[filled], align="edge",
           edgecolor="black", color="tab:blue", label="accuracy")
    ax.bar(edges[:-1][filled], (bins["confidence"] - bins["accuracy"])[filled],
           bottom=bins["accuracy"][filled], width=width[filled], align="edge",
           color="tab:red", alpha=0.3, label="gap to confidence")
    ax.plot([0, 1], [0, 1], linestyle="--", color="gray", label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top-class probability)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{title}  ECE = {100 * bins['ece']:.2f}%".strip(), fontsize="medium")
    ax.legend(loc="upper left", fontsize="small")
    return figure


def roc_figure(probs: np.ndarray, y_true: np.ndarray, classes: Sequence[str],
               auc: Sequence[float | None], title: str = "") -> Figure:
    """One-vs-rest ROC curve per class (classes absent from the test set are left out)."""
    from sklearn.metrics import roc_curve

    figure = Figure(figsize=(5, 5))
    ax = figure.add_subplot()
    for c, name in enumerate(classes):
        if auc[c] is None:
            continue
        fpr, tpr, _ = roc_curve(y_true == c, probs[:, c])
        ax.plot(fpr, tpr, label=f"{name} (AUC {auc[c]:.3f})")
    ax.plot([0, 1], [0, 1], linestyle="--", color="gray")
    ax.set_xlabel("false positive rate (1 - specificity)")
    ax.set_ylabel("true positive rate (sensitivity)")
    ax.set_title(f"{title} one-vs-rest ROC".strip(), fontsize="medium")
    ax.legend(loc="lower right", fontsize="small")
    return figure


def confusion_grid_figure(
    cells: Sequence[Sequence[tuple[np.ndarray, Sequence[str]] | None]],
    row_titles: Sequence[str],
    column_titles: Sequence[str],
) -> Figure:
    """Figure 5's layout: one row per dataset, one column per model (counts, coloured by rate)."""
    n_rows, n_cols = len(row_titles), len(column_titles)
    k_max = max(len(cell[1]) for row in cells for cell in row if cell is not None)
    side = _side(k_max)
    figure = Figure(figsize=(side * n_cols, side * n_rows + 0.3), layout="constrained")
    axes = figure.subplots(n_rows, n_cols, squeeze=False)
    for r, row in enumerate(cells):
        for c, cell in enumerate(row):
            ax = axes[r][c]
            if cell is None:
                ax.set_axis_off()
                continue
            cm, classes = cell
            draw_confusion(ax, cm, classes, normalize=False, title=f"{row_titles[r]} / {column_titles[c]}")
    return figure


_CURVES = (("loss", "train_loss", "val_loss"), ("accuracy", "train_acc", "val_acc"))


def curves_figure(history: dict[str, Sequence[float]], title: str = "") -> Figure:
    """A run's learning curves from history.csv: train and val loss, train and val accuracy per epoch."""
    figure = Figure(figsize=(9, 3.5))
    for index, (name, train, val) in enumerate(_CURVES):
        ax = figure.add_subplot(1, 2, index + 1)
        ax.plot(history["epoch"], history[train], marker=".", label="train")
        ax.plot(history["epoch"], history[val], marker=".", label="val")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(name)
        ax.set_title(f"{title}: {name}" if title else name, fontsize="medium")
        ax.legend(fontsize="small")
        ax.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def curves_overlay_figure(histories: Sequence[tuple[str, dict[str, Sequence[float]]]], title: str = "") -> Figure:
    """All runs of a data set: val (solid) and train (dashed) loss and accuracy, one colour per run."""
    figure = Figure(figsize=(11, 4))
    colours = [f"C{i % 10}" for i in range(len(histories))]
    for index, (name, train, val) in enumerate(_CURVES):
        ax = figure.add_subplot(1, 2, index + 1)
        for colour, (label, history) in zip(colours, histories):
            ax.plot(history["epoch"], history[val], color=colour, label=label)
            ax.plot(history["epoch"], history[train], color=colour, linestyle="--", alpha=0.6)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(name)
        ax.set_title(f"{title}: {name} (val solid, train dashed)" if title else name, fontsize="medium")
        ax.grid(alpha=0.3)
        if index == 1:
            ax.legend(fontsize="x-small", loc="center left", bbox_to_anchor=(1.02, 0.5))
    figure.tight_layout()
    return figure


def reliability_comparison_figure(raw: dict, calibrated: dict, temperature: float, title: str = "") -> Figure:
    """Reliability diagram before and after temperature scaling: accuracy per confidence bin
    against its mean confidence (marker area ~ images in the bin), with each curve's ECE."""
    figure = Figure(figsize=(5, 5))
    ax = figure.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle="--", color="gray", label="perfect calibration")
    curves = ((raw, "raw", "tab:red"), (calibrated, f"temperature T = {temperature:.2f}", "tab:blue"))
    for bins, label, colour in curves:
        filled = bins["count"] > 0
        sizes = 20 + 180 * bins["count"][filled] / max(1, bins["count"].max())
        ax.plot(bins["confidence"][filled], bins["accuracy"][filled], color=colour, alpha=0.7)
        ax.scatter(bins["confidence"][filled], bins["accuracy"][filled], s=sizes, color=colour,
                   edgecolor="black", linewidth=0.5, zorder=3, label=f"{label} (ECE {100 * bins['ece']:.1f}%)")
    ax.set_xlim(-0.03, 1.03)  # bins at accuracy 0 or 1 stay visible
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("mean confidence in bin (top-class probability)")
    ax.set_ylabel("accuracy in bin")
    ax.set_title(f"{title}: reliability on test" if title else "reliability on test", fontsize="medium")
    ax.legend(loc="upper left", fontsize="small")
    ax.grid(alpha=0.3)
    return figure


_POINT_MARKERS = ("o", "s", "^", "D", "v")


def operating_points_figure(score: np.ndarray, is_positive: np.ndarray, points: Sequence, title: str = "") -> Figure:
    """Test-set ROC and precision-recall curves of a binary task, with the operating points
    (thresholds chosen on validation) marked where they land on test."""
    from sklearn.metrics import precision_recall_curve, roc_curve

    figure = Figure(figsize=(10, 4.6), layout="constrained")
    roc_ax, pr_ax = figure.subplots(1, 2)
    fpr, tpr, _ = roc_curve(is_positive, score)
    roc_ax.plot(fpr, tpr, color="tab:blue", label="test ROC")
    roc_ax.plot([0, 1], [0, 1], linestyle="--", color="gray")
    precision, recall, _ = precision_recall_curve(is_positive, score)
    pr_ax.plot(recall, precision, color="tab:blue", label="test precision-recall")
    pr_ax.axhline(np.mean(is_positive), linestyle="--", color="gray", label="prevalence")
    for index, point in enumerate(points):
        test = point.test
        label = f"{point.rule} (t = {point.threshold:.3f})"
        style = dict(marker=_POINT_MARKERS[index % len(_POINT_MARKERS)], s=70, color=f"C{index + 1}",
                     edgecolor="black", zorder=3, label=label)
        if test["sensitivity"] is not None and test["specificity"] is not None:
            roc_ax.scatter(1 - test["specificity"], test["sensitivity"], **style)
        if test["sensitivity"] is not None and test["ppv"] is not None:
            pr_ax.scatter(test["sensitivity"], test["ppv"], **style)
    # A little margin: operating points often sit on the axes' edges (sensitivity 1, specificity 1).
    roc_ax.set(xlim=(-0.03, 1.03), ylim=(-0.03, 1.03), xlabel="1 - specificity", ylabel="sensitivity")
    pr_ax.set(xlim=(-0.03, 1.03), ylim=(-0.03, 1.03), xlabel="recall (sensitivity)", ylabel="precision (PPV)")
    roc_ax.set_title(f"{title}: ROC (test)", fontsize="medium")
    pr_ax.set_title(f"{title}: precision-recall (test)", fontsize="medium")
    for ax in (roc_ax, pr_ax):
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right" if ax is roc_ax else "lower left", fontsize="x-small")
    return figure
