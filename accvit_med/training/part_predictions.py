"""Predictions for a part of the split, gathered from every process, and the files made from them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from accvit_med.datasets.torchdata import SplitImageDataset
from accvit_med.fileio import atomic_write_json
from accvit_med.training import data as rundata
from accvit_med.training.context import RunContext
from accvit_med.training.distributed import DistContext, all_gather_objects
from accvit_med.training.loop import predict_logits
from accvit_med.training.recipe import FinetuneConfig


@dataclass
class PartOutput:
    """Model outputs for every row of one part, in split order."""

    dataset: SplitImageDataset
    logits: torch.Tensor
    loss: float

    @property
    def targets(self) -> torch.Tensor:
        return torch.tensor(self.dataset.targets)

    @property
    def probs(self) -> torch.Tensor:
        return torch.softmax(self.logits.double(), dim=1)

    @property
    def preds(self) -> torch.Tensor:
        return self.logits.argmax(dim=1)

    @property
    def accuracy(self) -> float:
        return float((self.preds == self.targets).double().mean())

    @property
    def macro_f1(self) -> float:
        """The unweighted mean of per-class F1 over every class of the run (a class with no true and
        no predicted rows scores 0, as scikit-learn's ``zero_division=0``)."""
        classes = self.logits.shape[1]
        index = self.targets * classes + self.preds
        confusion = torch.bincount(index, minlength=classes * classes).view(classes, classes).double()
        hits = confusion.diagonal()
        denominator = confusion.sum(dim=0) + confusion.sum(dim=1)  # predicted + true, per class
        f1 = torch.where(denominator > 0, 2 * hits / denominator.clamp(min=1), torch.zeros_like(hits))
        return float(f1.mean())


def gather_in_order(ctx: DistContext, rows: torch.Tensor, logits: torch.Tensor, num_rows: int) -> torch.Tensor:
    """Every process's (rows, logits) put together in row order; each row must appear once."""
    pieces = [p for p in all_gather_objects(ctx, (rows, logits)) if p[0].numel()]
    all_rows = torch.cat([p[0] for p in pieces])
    all_logits = torch.cat([p[1] for p in pieces])
    if sorted(all_rows.tolist()) != list(range(num_rows)):
        raise RuntimeError(f"gathered predictions cover {len(set(all_rows.tolist()))} distinct rows of {num_rows}")
    ordered = torch.empty_like(all_logits)
    ordered[all_rows] = all_logits
    return ordered


def evaluate_part(
    model: nn.Module,
    dataset: SplitImageDataset,
    config: FinetuneConfig,
    ctx: RunContext,
    criterion: nn.Module,
    description: str,
) -> PartOutput:
    """Predictions and loss (``criterion``) over every row of ``dataset``, each process a shard."""
    loader = rundata.eval_loader(dataset, config, ctx.dist, pin_memory=ctx.device.type == "cuda")
    with ctx.progress(description, len(dataset)) as bar:
        rows, logits = predict_logits(model, loader, ctx, on_batch=lambda n: bar.advance(n * ctx.dist.world_size))
    logits = gather_in_order(ctx.dist, rows, logits, len(dataset))
    # The training criterion (label smoothing, class weights) on the CPU, as torchvision's
    # reference scripts validate: "best validation loss" is then the loss being minimised.
    cpu_criterion = _on_cpu(criterion)
    with torch.no_grad():
        loss = float(cpu_criterion(logits, torch.tensor(dataset.targets)))
    return PartOutput(dataset, logits, loss)


def _on_cpu(criterion: nn.Module) -> nn.Module:
    if isinstance(criterion, nn.CrossEntropyLoss) and criterion.weight is not None:
        return nn.CrossEntropyLoss(weight=criterion.weight.float().cpu(), label_smoothing=criterion.label_smoothing)
    return criterion


def write_part_files(output: PartOutput, classes: list[str], ordinal: bool, predictions_path: Path) -> dict:
    """Write the predictions CSV of one part; return its metrics dict."""
    from accvit_med.reports import classification_metrics, write_predictions

    targets = output.targets.numpy()
    preds = output.preds.numpy()
    probs = output.probs.numpy()
    write_predictions(predictions_path, output.dataset.paths, targets, preds, probs, classes,
                      metadata=output.dataset.metadata)
    return classification_metrics(targets, preds, probs, classes, ordinal, warn=False)


def write_final_outputs(run, outputs: dict[str, PartOutput], classes: list[str], ordinal: bool, checkpoint: str,
                        epoch: int) -> dict:
    """predictions_val.csv, predictions_test.csv and metrics.json (test metrics) of a run."""
    write_part_files(outputs["val"], classes, ordinal, run.predictions("val"))
    metrics = write_part_files(outputs["test"], classes, ordinal, run.predictions("test"))
    metrics["evaluated"] = {
        "split": "test",
        "checkpoint": checkpoint,
        "epoch": epoch,
        "loss": outputs["test"].loss,
        "val_loss": outputs["val"].loss,
    }
    atomic_write_json(run.metrics, metrics)
    return metrics
