"""``--track tensorboard``: event files under ``<run>/tensorboard/`` (``tensorboard --logdir runs``).

Per epoch: losses and accuracies (train, val), the learning rate, images/s. At the end: the test
metrics, the test confusion matrix as an image and the recipe as hparams (with the test accuracy
and macro-F1 as their metrics, in ``tensorboard/hparams``). A resumed run appends a new events
file in the same folder; the steps are epochs, so the curves continue.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

from accvit_med.tracking.base import flat_params, scalar_items

EPOCH_TAGS = {"train_loss": "loss/train", "val_loss": "loss/val", "train_acc": "accuracy/train",
              "val_acc": "accuracy/val", "val_macro_f1": "macro_f1/val", "lr": "lr",
              "images_per_s": "speed/images_per_s",
              # pre-training's columns
              "val_top1": "top1/val", "val_top5": "top5/val", "ema_val_loss": "loss/val_ema",
              "ema_val_top1": "top1/val_ema", "ema_val_top5": "top5/val_ema", "val_agreement": "agreement/val",
              "ema_val_agreement": "agreement/val_ema"}
TEST_METRICS = ("accuracy", "macro_f1", "macro_precision", "macro_recall", "weighted_f1", "balanced_accuracy")


class TensorBoardTracker:
    def __init__(self, run_dir: Path):
        self.folder = Path(run_dir) / "tensorboard"
        self.writer = None
        self.record: dict = {}
        self.epoch = 0

    def on_fit_start(self, record: dict) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.record = record
        self.writer = SummaryWriter(str(self.folder))
        recipe = json.dumps(record.get("recipe", {}), indent=2, sort_keys=True)
        self.writer.add_text("recipe", "    " + recipe.replace("\n", "\n    "))  # markdown code block

    def on_epoch_end(self, row: dict) -> None:
        self.epoch = int(row["epoch"])
        for key, value in scalar_items(row).items():
            if key in EPOCH_TAGS and math.isfinite(value):
                self.writer.add_scalar(EPOCH_TAGS[key], value, self.epoch)
        self.writer.flush()

    def on_fit_end(self, metrics: dict, artifacts: Sequence[Path]) -> None:
        values = scalar_items(metrics)
        for name in TEST_METRICS:
            if name in values:
                self.writer.add_scalar(f"test/{name}", values[name], self.epoch)
        predictions = next((Path(p) for p in artifacts if Path(p).name == "predictions_test.csv"), None)
        if predictions is not None and predictions.is_file():
            self.writer.add_figure("test/confusion_matrix", confusion_figure(predictions), self.epoch)
        hparams = flat_params(self.record.get("recipe", {}))
        hparams.update(model=str(self.record.get("model")), dataset=str(self.record.get("dataset")))
        test_metrics = {f"hparam/test_{k}": values[k] for k in ("accuracy", "macro_f1") if k in values}
        self.writer.add_hparams(hparams, test_metrics, run_name="hparams")
        self.writer.close()


def confusion_figure(predictions_csv: Path):
    """The test confusion matrix (counts) of a predictions CSV, as the report draws it."""
    from matplotlib.figure import Figure

    from accvit_med.reports.confusion import confusion_matrix
    from accvit_med.reports.figures import draw_confusion
    from accvit_med.reports.predictions import read_predictions

    predictions = read_predictions(predictions_csv)
    cm = confusion_matrix(predictions.y_true, predictions.y_pred, len(predictions.classes))
    figure = Figure(figsize=(4, 4))
    draw_confusion(figure.add_subplot(), cm, predictions.classes, normalize=False, title="test")
    return figure
