"""``accvit-med split``: a stratified, leakage-audited train/val/test split of a data set."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

DATASETS = "ham10000, eyepacs, busi, folder, csv"


def register(app: typer.Typer) -> None:
    app.command("split")(split)


def split(
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help=f"Data set layout: {DATASETS}."),
    data_dir: Optional[Path] = typer.Option(
        None, "--data-dir", help="Folder as the download unpacked.", show_default="datasets/<dataset>/"
    ),
    out: Optional[Path] = typer.Option(
        None, "--out", "-o", help="Split CSV to write; the manifest goes beside it.",
        show_default="splits/<dataset>.csv",
    ),
    seed: int = typer.Option(42, "--seed", help="Random seed; same inputs and seed give byte-identical files."),
    protocol: Optional[str] = typer.Option(
        None, "--protocol",
        help="grouped: each group (lesion, patient) in one split; paper: the paper's per image, 60:20:20, "
        "stratified.", show_default="grouped",
    ),
    ratios: Optional[str] = typer.Option(None, "--ratios", help="train,val,test proportions.", show_default="60,20,20"),
    group: Optional[bool] = typer.Option(
        None, "--group/--no-group",
        help="With --protocol grouped: keep each group in one split, or split per image.", show_default="group",
    ),
    check: bool = typer.Option(False, "--check", help="Open every image; leave out unreadable ones (listed)."),
    dedupe: bool = typer.Option(
        False, "--dedupe", help="Group near-identical images (perceptual hash) so copies cannot straddle splits."
    ),
    subgroups: Optional[str] = typer.Option(
        None, "--subgroups", metavar="COL[,COL...]",
        help="Metadata columns kept in the split for the report's subgroup table (csv layout: extra "
        "columns of the label file).", show_default="ham10000: age,sex,localization,dx_type; eyepacs: eye",
    ),
    folds: Optional[int] = typer.Option(
        None, "--folds", metavar="K",
        help="K-fold cross-validation: K split files (fold k's test: the k-th of K stratified, group-aware "
        "parts) and cv.json, in the folder --out.", show_default="one split",
    ),
    val_fraction: Optional[float] = typer.Option(
        None, "--val-fraction", help="With --folds: the share of each fold's non-test images that is val.",
        show_default="0.2",
    ),
    audit: Optional[Path] = typer.Option(
        None, "--audit", help="Audit an existing split file for leakage instead (exit 1 if any is found)."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Split a data set into train/val/test: stratified by class, group-aware, audited for leakage.

    --protocol paper gives the paper's split instead (per image, 60:20:20, stratified, seeded).

    Writes the split CSV (path,label,group,split) and its JSON manifest, then prints the class x
    split counts. With --folds K: K such files (fold1.csv ...) and cv.json, the manifest of the
    cross-validation, in splits/<dataset>-<K>fold/; every image is in one fold's test.

    With --audit FILE it only checks an existing split: groups or byte-identical
    files in two splits are printed and the exit code is 1.
    """
    from accvit_med.datasets.splits import parse_ratios
    from accvit_med.errors import UserError

    if audit is not None:
        if protocol is not None:
            raise UserError("--protocol applies when writing a split; drop it with --audit")
        _audit(audit, data_dir)
        return
    if dataset is None:
        raise UserError(f"--dataset is required (one of {DATASETS}), or --audit FILE to check a split")
    from accvit_med.datasets.create_split import create_split
    from accvit_med.datasets.splits import DEFAULT_RATIOS
    from accvit_med.fileio import check_writable

    if folds is not None:
        if ratios is not None:
            raise UserError("--ratios sets one split's proportions; with --folds each fold's test is 1/K "
                            "and --val-fraction sets val's share of the rest")
        check_writable(out.parent if out is not None else Path("splits"))
        _folds(dataset, data_dir, out, folds, val_fraction, seed, protocol, group, check, dedupe, quiet, subgroups)
        return
    if val_fraction is not None:
        raise UserError("--val-fraction applies to --folds K; a single split takes --ratios train,val,test")
    check_writable(out.parent if out is not None else Path("splits"))
    parsed = DEFAULT_RATIOS if ratios is None else parse_ratios(ratios)
    given = [] if ratios is None else [float(v) for v in ratios.split(",")]
    if given and abs(sum(given) - 1) > 1e-9 and abs(sum(given) - 100) > 1e-9:
        typer.echo(f"note: --ratios {ratios} sum to {sum(given):g}; used as "
                   f"{','.join(f'{r:.4g}' for r in parsed)} (train,val,test)", err=True)
    result = create_split(
        dataset, data_dir, out, seed=seed, ratios=parsed, grouped=group,
        check=check, dedupe=dedupe, progress=not quiet, protocol=protocol or "grouped",
        subgroups=_subgroup_list(subgroups),
    )
    _print_result(result)


def _subgroup_list(subgroups: Optional[str]) -> Optional[list[str]]:
    return None if subgroups is None else [c.strip() for c in subgroups.split(",") if c.strip()]


def _folds(dataset, data_dir, out, k, val_fraction, seed, protocol, group, check, dedupe, quiet, subgroups) -> None:
    from rich.console import Console

    from accvit_med.datasets.create_split import create_folds
    from accvit_med.datasets.folds import CV_MANIFEST, DEFAULT_VAL_FRACTION

    result = create_folds(
        dataset, k, data_dir, out, seed=seed, grouped=group, check=check, dedupe=dedupe, progress=not quiet,
        val_fraction=DEFAULT_VAL_FRACTION if val_fraction is None else val_fraction,
        protocol=protocol or "grouped", subgroups=_subgroup_list(subgroups),
    )
    console = Console()
    _print_notes(console, result)
    console.print(_folds_table(result.manifest))
    cv = result.manifest
    mode = "group-aware" if cv["grouped"] else "image-level"
    console.print(f"{mode} {cv['k']}-fold cross-validation ({cv['protocol']} protocol) of {cv['n_samples']} images, "
                  f"seed {cv['seed']}, val {cv['val_fraction']:g} of each fold's rest; every image in one test part",
                  markup=False, soft_wrap=True)
    for i, audit in enumerate(result.audits):
        findings = audit.lines()
        console.print(f"leakage audit, fold {i + 1}: " + ("clean" if not findings else "see below"),
                      markup=False, soft_wrap=True)
        for line in findings:
            console.print(f"  {line}", markup=False, soft_wrap=True)
    console.print(f"wrote {', '.join(str(p) for p in result.csv_paths)} (each with its manifest) and "
                  f"{result.out_dir / CV_MANIFEST}", markup=False, soft_wrap=True)


def _print_notes(console, result) -> None:
    """The split's notes and the images it left out (a SplitResult's or a FoldsResult's)."""
    for note in result.notes:
        console.print(f"note: {note}", markup=False, soft_wrap=True)
    if result.excluded:
        console.print(f"left out {len(result.excluded)} unreadable image(s):", markup=False, soft_wrap=True)
        for path, reason in result.excluded:
            console.print(f"  {path}: {reason}", markup=False, soft_wrap=True)


def _folds_table(cv: dict):
    from rich.table import Table

    table = Table(title=f"{cv['dataset']}: images per fold and part")
    table.add_column("fold")
    for part in ("train", "val", "test"):
        table.add_column(part, justify="right")
    table.add_column("test per class", justify="left")
    for fold in cv["folds"]:
        counts = fold["counts"]
        per_class = ", ".join(f"{c} {counts['test'][c]}" for c in cv["classes"])
        table.add_row(str(fold["fold"]), *(str(sum(counts[p].values())) for p in ("train", "val", "test")), per_class)
    return table


def _print_result(result) -> None:
    from rich.console import Console

    console = Console()
    manifest = result.manifest
    _print_notes(console, result)
    console.print(_count_table(manifest))
    flow = manifest.get("flow", {})
    if flow.get("left_out"):
        reasons = ", ".join(f"{n} {reason}" for reason, n in flow["left_out"].items())
        console.print(f"{flow['images_found']} image files found; left out: {reasons}", markup=False, soft_wrap=True)
    if manifest.get("subgroups"):
        console.print(f"subgroup columns kept: {', '.join(manifest['subgroups'])}", markup=False, soft_wrap=True)
    mode = "group-aware" if manifest["grouped"] else "image-level"
    console.print(f"{mode} split ({manifest['protocol']} protocol) of {manifest['n_samples']} images, "
                  f"seed {manifest['seed']}", markup=False, soft_wrap=True)
    findings = result.audit.lines()
    console.print("leakage audit: " + ("clean" if not findings else "see below"), markup=False, soft_wrap=True)
    for line in findings:
        console.print(f"  {line}", markup=False, soft_wrap=True)
    console.print(f"wrote {result.csv_path} and {result.csv_path.with_suffix('.json')}", markup=False, soft_wrap=True)


def _count_table(manifest: dict):
    from rich.table import Table

    counts = manifest["counts"]
    splits = list(counts)
    table = Table(title=f"{manifest['dataset']}: images per class and split")
    table.add_column("class")
    for name in splits:
        table.add_column(name, justify="right")
    table.add_column("total", justify="right")
    for cls in manifest["classes"]:
        total = sum(counts[s][cls] for s in splits)
        cells = [f"{counts[s][cls]} ({100 * counts[s][cls] / total:.1f}%)" if total else "0" for s in splits]
        table.add_row(cls, *cells, str(total))
    per_split = [sum(counts[s].values()) for s in splits]
    grand = sum(per_split)
    table.add_row("all", *[f"{n} ({100 * n / grand:.1f}%)" for n in per_split], str(grand), style="bold")
    return table


def _audit(csv_path: Path, data_dir: Optional[Path]) -> None:
    from accvit_med.datasets.create_split import audit_split_file

    report = audit_split_file(csv_path, data_dir)
    findings = report.audit.lines()
    typer.echo(f"audited {report.csv_path}: {report.n_samples} images under {report.root}")
    if not findings:
        typer.echo("leakage audit: clean (no group and no byte-identical file in two splits)")
        return
    for line in findings:
        typer.echo(f"leakage: {line}")
    if not report.audit.clean:
        # A finding, not a usage error: exit 1 (usage errors are 2).
        raise typer.Exit(code=1)
