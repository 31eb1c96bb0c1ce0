"""The report's tables, in the paper's layouts, rendered as Markdown, CSV and LaTeX.

- Table 1: rows = models, a column group per dataset with macro precision, recall, F1 and
  accuracy in percent.
- Tables 5-7 (one per dataset): rows = classes, then macro avg, weighted avg and accuracy;
  a precision/recall/F1 group per model, side by side, and a count (support) column.

A :class:`Table` holds cells as numbers (formatted with its ``decimals``), strings (written as
they are) or None (blank); the three renderers lay out the same cells.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Collection, Mapping, Sequence

Cell = float | int | str | None


@dataclass
class Table:
    caption: str
    row_header: str
    # Column groups: (group title, its column titles); "" for a column outside any group.
    groups: list[tuple[str, list[str]]]
    rows: list[tuple[str, list[Cell]]] = field(default_factory=list)
    decimals: int = 2

    @property
    def flat_columns(self) -> list[str]:
        return [f"{group} {column}".strip() for group, columns in self.groups for column in columns]

    def cell_text(self, value: Cell) -> str:
        if value is None:
            return ""
        if isinstance(value, str):
            return value
        if isinstance(value, int):
            return str(value)
        return f"{value:.{self.decimals}f}"


def to_markdown(table: Table) -> str:
    def row(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    header = [table.row_header, *table.flat_columns]
    lines = [f"**{table.caption}**", "", row(header), "|" + "|".join([":--"] + ["--:"] * (len(header) - 1)) + "|"]
    for label, cells in table.rows:
        lines.append(row([label, *("–" if c is None else table.cell_text(c) for c in cells)]))
    return "\n".join(lines) + "\n"


def to_csv(table: Table) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([table.row_header, *table.flat_columns])
    for label, cells in table.rows:
        writer.writerow([label, *(table.cell_text(c) for c in cells)])
    return buffer.getvalue()


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}",
                  "±": r"$\pm$", "–": "--", "−": "$-$"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def to_latex(table: Table) -> str:
    """A booktabs tabular with a \\multicolumn header per column group (needs \\usepackage{booktabs})."""
    spec = "l" + "".join(("c" if not group else "r") * len(columns) for group, columns in table.groups)
    lines = [r"\begin{table}[ht]", r"\centering", f"\\caption{{{latex_escape(table.caption)}}}",
             f"\\begin{{tabular}}{{{spec}}}", r"\toprule"]
    if any(group for group, _ in table.groups):
        top, rules, start = [""], [], 2
        for group, columns in table.groups:
            width = len(columns)
            if group:
                top.append(f"\\multicolumn{{{width}}}{{c}}{{{latex_escape(group)}}}")
                rules.append(f"\\cmidrule(lr){{{start}-{start + width - 1}}}")
            else:
                top += [""] * width
            start += width
        lines.append(" & ".join(top) + r" \\")
        lines.append(" ".join(rules))
    sub = [latex_escape(table.row_header)] + [latex_escape(c) for _, cols in table.groups for c in cols]
    lines += [" & ".join(sub) + r" \\", r"\midrule"]
    for label, cells in table.rows:
        lines.append(" & ".join([latex_escape(label), *(latex_escape(table.cell_text(c)) for c in cells)])
                     + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


TABLE1_METRICS = (("Pr", "macro_precision"), ("Re", "macro_recall"), ("F1", "macro_f1"), ("Acc", "accuracy"))


def table1(results: Mapping[str, Mapping[str, dict]], models: Sequence[str]) -> Table:
    """Table 1: ``results[dataset][model]`` metrics dicts -> macro Pr/Re/F1/Acc in percent."""
    table = Table(
        caption="Test-set macro precision, recall, F1 and accuracy (%)",
        row_header="Model",
        groups=[(dataset, [short for short, _ in TABLE1_METRICS]) for dataset in results],
        decimals=2,
    )
    for model in models:
        cells: list[Cell] = []
        for runs in results.values():
            metrics = runs.get(model)
            cells += [None if metrics is None else 100 * metrics[key] for _, key in TABLE1_METRICS]
        table.rows.append((model, cells))
    return table


def per_class_table(dataset: str, runs: Mapping[str, dict]) -> Table:
    """Tables 5-7 for one dataset: per-class P/R/F1 per model, a count column, then averages."""
    first = next(iter(runs.values()))
    classes = first["classes"]
    table = Table(
        caption=f"Per-class results on {dataset} (test set)",
        row_header="class",
        groups=[*((model, ["precision", "recall", "f1-score"]) for model in runs), ("", ["count"])],
        decimals=4,
    )
    for name in classes:
        cells: list[Cell] = []
        for metrics in runs.values():
            scores = metrics["per_class"][name]
            cells += [scores["precision"], scores["recall"], scores["f1"]]
        table.rows.append((name, [*cells, first["per_class"][name]["support"]]))
    for label, prefix in (("macro avg", "macro"), ("weighted avg", "weighted")):
        cells = []
        for metrics in runs.values():
            cells += [metrics[f"{prefix}_precision"], metrics[f"{prefix}_recall"], metrics[f"{prefix}_f1"]]
        table.rows.append((label, [*cells, first["n"]]))
    cells = []
    for metrics in runs.values():  # as in classification_report: accuracy under precision
        cells += [metrics["accuracy"], None, None]
    table.rows.append(("accuracy", [*cells, first["n"]]))
    return table


def interval_text(estimate: float | None, low: float | None, high: float | None,
                  scale: float = 100, decimals: int = 2) -> str:
    """'85.07 [83.90, 86.20]' (percent), or '–' when undefined."""
    if estimate is None:
        return "–"
    if low is None or high is None:
        return f"{scale * estimate:.{decimals}f}"
    return f"{scale * estimate:.{decimals}f} [{scale * low:.{decimals}f}, {scale * high:.{decimals}f}]"


def p_value_text(p_value: float | None, n_boot: int) -> str:
    if p_value is None:
        return "–"
    # A bootstrap p-value cannot resolve below one resample in n_boot.
    return f"<{1 / n_boot:.2g}" if p_value == 0 else f"{p_value:.3f}"


def clinical_table(dataset: str, runs: Mapping[str, dict], grouped: Collection[str] = ()) -> Table:
    """Per-class sensitivity, specificity, one-vs-rest AUC, PPV and NPV per model (proportions with
    their Wilson interval, except for the seed groups named in ``grouped``: means over seeds)."""
    first = next(iter(runs.values()))
    table = Table(
        caption=f"Per-class sensitivity, specificity, one-vs-rest AUC, PPV and NPV on {dataset} "
                "(test set; [95% Wilson score interval])",
        row_header="class",
        groups=[*((model, ["sensitivity", "specificity", "AUC", "PPV", "NPV"]) for model in runs),
                ("", ["count"])],
        decimals=3,
    )

    def proportion(scores: dict, key: str, label: str) -> Cell:
        interval = scores.get("wilson", {}).get(key) if label not in grouped else None
        if interval is None:
            return scores[key]
        return interval_text(scores[key], interval["low"], interval["high"], scale=1, decimals=3)

    for name in first["classes"]:
        cells: list[Cell] = []
        for label, metrics in runs.items():
            scores = metrics["per_class"][name]
            cells += [proportion(scores, "sensitivity", label), proportion(scores, "specificity", label),
                      "undefined" if scores["auc"] is None else scores["auc"],
                      proportion(scores, "ppv", label), proportion(scores, "npv", label)]
        table.rows.append((name, [*cells, first["per_class"][name]["support"]]))
    cells = []
    for metrics in runs.values():
        mean = {key: sum(metrics["per_class"][c][key] for c in metrics["classes"]) / len(metrics["classes"])
                for key in ("specificity", "ppv", "npv")}
        cells += [metrics["balanced_accuracy"], mean["specificity"],
                  "undefined" if metrics["macro_auc"] is None else metrics["macro_auc"], mean["ppv"], mean["npv"]]
    table.rows.append(("macro avg (sensitivity: balanced accuracy)", [*cells, first["n"]]))
    return table
