"""DDP under torchrun: two gloo processes on the CPU train one run (with --ema); only rank 0 writes,
the gathered predictions cover every test row exactly once, and they are the predictions a single
process makes from the same checkpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from accvit_med.datasets.splits import read_split
from accvit_med.training.evaluate_run import evaluate_run

SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    from pathlib import Path

    out = Path(sys.argv[2]).resolve()
    written = []

    def audit(event, args):
        # Record every file this process opens for writing inside the run directory.
        if event == "open" and args[0] is not None and not isinstance(args[0], int):
            mode, flags = args[1] or "", args[2] or 0
            if ("w" in mode or "a" in mode or "x" in mode or flags & (os.O_WRONLY | os.O_RDWR)) \\
                    and str(out) in os.path.abspath(str(args[0])):
                written.append(str(args[0]))

    sys.addaudithook(audit)
    from torch import nn
    from accvit_med.training.finetune import finetune
    from accvit_med.training.recipe import FinetuneConfig

    def tiny(num_classes):  # the same network as the test module's tiny()
        return nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                             nn.Flatten(), nn.Linear(8, num_classes))

    config = FinetuneConfig(split=sys.argv[1], model="tiny", weights="none", epochs=2, batch_size=2, lr=3e-3,
                            image_size=32, workers=0, seed=5, device="cpu", ema_decay=0.5)
    result = finetune(config, out=str(out), model_factory=tiny)
    rank = os.environ["RANK"]
    report = {"written": sorted(set(written)), "accuracy": result.metrics["accuracy"], "epochs": len(result.history)}
    Path(sys.argv[3], f"rank{rank}.json").write_text(json.dumps(report))
    """
)


def tiny(num_classes):
    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, num_classes))


def test_two_gloo_processes_train_one_run(make_split, tmp_path):
    # 15 images: odd numbers of train, val and test rows, so the shards of two ranks are uneven.
    split_csv = make_split(("a", "b"), {"a": 9, "b": 6}, size=(36, 36), seed=4)
    split = read_split(split_csv)
    script = tmp_path / "ddp.py"
    script.write_text(SCRIPT)
    reports = tmp_path / "reports"
    reports.mkdir()
    out = tmp_path / "run"

    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         str(script), str(split_csv), str(out), str(reports)],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]

    rank0 = json.loads((reports / "rank0.json").read_text())
    rank1 = json.loads((reports / "rank1.json").read_text())
    assert rank1["written"] == []
    assert any(p.endswith("metrics.json") or "metrics.json" in p for p in rank0["written"])
    assert rank0["accuracy"] == rank1["accuracy"]  # every rank gets the gathered result
    assert rank0["epochs"] == rank1["epochs"] == 2

    test_rows = split.part("test")
    assert len(test_rows) % 2 == 1
    predictions = pd.read_csv(out / "predictions_test.csv")
    assert predictions["path"].tolist() == test_rows["path"].tolist()
    assert not predictions["path"].duplicated().any()
    assert len(pd.read_csv(out / "predictions_val.csv")) == len(split.part("val"))
    config = json.loads((out / "config.json").read_text())
    assert config["distributed"]["world_size"] == 2
    # --ema through the DDP wrapper: the average is kept beside the weights, best.pt holds plain keys.
    last = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    best = torch.load(out / "checkpoints" / "best.pt", weights_only=True)
    assert {f"module.{k}" for k in last["model"]} | {"n_averaged"} == set(last["ema"])
    assert set(best["model"]) == set(last["model"]) and int(last["ema"]["n_averaged"]) > 1

    # One process, the same best.pt: the gathered rows carry each image's own logits (a gather that
    # placed the ranks' rows as they came would pair images with other images' probabilities).
    classes = ["a", "b"]
    probs = [f"prob_{c}" for c in classes]
    run_metrics = json.loads((out / "metrics.json").read_text())
    history = pd.read_csv(out / "history.csv")
    for part in ("test", "val"):
        single = evaluate_run(out, part=part, device="cpu", batch_size=3, model_factory=tiny,
                              out=tmp_path / "single")
        ours = pd.read_csv(out / f"predictions_{part}.csv")
        theirs = pd.read_csv(single.predictions)
        assert ours["path"].tolist() == theirs["path"].tolist()
        np.testing.assert_allclose(ours[probs].to_numpy(), theirs[probs].to_numpy(), atol=1e-5)
        assert ours["pred"].tolist() == theirs["pred"].tolist()
        if part == "test":
            for name in ("accuracy", "macro_f1", "macro_auc"):
                assert run_metrics[name] == pytest.approx(single.metrics[name], abs=1e-9), name
        else:  # the validation loss history.csv recorded for the best epoch
            best_epoch = single.epoch
            recorded = history.loc[history["epoch"] == best_epoch, "val_loss"].item()
            assert recorded == pytest.approx(single.metrics["evaluated"]["loss"], abs=1e-5)
