"""The recipe (appendix C.2 defaults, config files, precedence) and the per-epoch sample order."""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest
import torch
from sklearn.utils.class_weight import compute_class_weight

from accvit_med.errors import UserError
from accvit_med.training.data import inverse_frequency_weights, sample_weights
from accvit_med.training.distributed import DistContext
from accvit_med.training.loop import epoch_indices, eval_indices
from accvit_med.training.recipe import RUNTIME_FIELDS, FinetuneConfig, FinetuneRecipe, resumed_recipe
from accvit_med.training.recipe_file import format_recipe, resolve_config, resumed_values


def test_defaults_are_the_papers_recipe():
    config = FinetuneConfig()
    assert (config.lr, config.label_smoothing, config.clip_grad_norm, config.epochs, config.image_size) == (
        5e-5, 0.1, 1.0, 100, 224)
    assert config.randaugment_ops > 0 and config.patience is None and config.balance == "none"
    # MaxViT's i1k_ft_update fills in what C.2 leaves out; its EMA is opt-in.
    assert (config.weight_decay, config.randaugment_ops, config.randaugment_magnitude, config.ema_decay) == (
        1e-8, 2, 15, None)
    assert "lr                    = 5e-05" in format_recipe(config)


@pytest.mark.parametrize("suffix, text", [
    (".toml", 'lr = 1e-4\nepochs = 30\nbatch-size = 16\namp = true\n'),
    (".json", '{"lr": 1e-4, "epochs": 30, "batch_size": 16, "amp": true}'),
    (".yaml", 'lr: 1.0e-4\nepochs: 30\nbatch_size: 16\namp: true\n'),
])
def test_config_file_then_command_line(tmp_path, suffix, text):
    path = tmp_path / f"recipe{suffix}"
    path.write_text(text)
    config = resolve_config({"epochs": 5, "seed": None}, path)
    assert (config.lr, config.batch_size, config.amp) == (1e-4, 16, True)
    assert config.epochs == 5  # the command line wins over the file
    assert config.seed == 42  # None means "not given": the default stays


@pytest.mark.parametrize("text, message", [
    ('{"learning_rate": 1}', "unknown keys \\['learning_rate'\\]"),
    ('{"epochs": 2.5}', "recipe key 'epochs' has a bad value 2.5"),
    ('{"epochs": 0}', "--epochs must be at least 1"),
    ('{"lr": ', "is not valid JSON"),
    ('[1, 2]', "must hold a table"),
])
def test_bad_config_files(tmp_path, text, message):
    path = tmp_path / "recipe.json"
    path.write_text(text)
    with pytest.raises(UserError, match=message):
        resolve_config({}, path)


def test_missing_config_file(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        resolve_config({}, tmp_path / "nope.toml")


def test_resume_may_change_runtime_fields_only():
    stored = FinetuneConfig(lr=1e-4, epochs=10, workers=3)
    # The stored recipe, then what the command line gives; runtime options not given are today's.
    merged = resumed_values(stored, {"epochs": 20, "device": "cpu"})
    assert (merged.lr, merged.epochs, merged.device) == (1e-4, 20, "cpu")
    assert merged.workers == FinetuneConfig().workers
    assert resumed_recipe(stored.recipe, merged.recipe).epochs == 20
    with pytest.raises(UserError, match="seed=42 \\(now 1\\)"):
        resumed_recipe(stored.recipe, replace(stored.recipe, seed=1))


def test_the_runtime_fields_are_the_options_that_do_not_change_the_numbers():
    # Derived once from field metadata: the run options, the data folder and the split's path.
    assert RUNTIME_FIELDS == {"device", "workers", "compile", "grad_checkpointing", "cache", "cache_dir",
                              "data_dir", "split"}
    assert not RUNTIME_FIELDS & {f.name for f in dataclasses.fields(FinetuneRecipe)}


def test_epoch_order_is_a_function_of_seed_and_epoch():
    single = DistContext()
    first = epoch_indices(10, seed=3, epoch=1, ctx=single)
    assert sorted(first) == list(range(10))
    assert first == epoch_indices(10, seed=3, epoch=1, ctx=single)
    assert first != epoch_indices(10, seed=3, epoch=2, ctx=single)
    assert first != epoch_indices(10, seed=4, epoch=1, ctx=single)


def test_ranks_share_the_epoch_order_with_padding_like_distributed_sampler():
    shards = [epoch_indices(11, 0, 1, DistContext(rank=r, world_size=3)) for r in range(3)]
    assert [len(s) for s in shards] == [4, 4, 4]
    counts = Counter(i for shard in shards for i in shard)
    assert set(counts) == set(range(11)) and sum(counts.values()) == 12  # one row repeated as padding
    evaluation = [eval_indices(11, DistContext(rank=r, world_size=3)) for r in range(3)]
    assert sorted(i for shard in evaluation for i in shard) == list(range(11))


class _Targets:
    def __init__(self, targets):
        self.targets = targets


def test_class_weights_match_sklearn_balanced():
    targets = [0] * 70 + [1] * 20 + [2] * 10
    ours = inverse_frequency_weights(_Targets(targets), 3)
    reference = compute_class_weight("balanced", classes=np.array([0, 1, 2]), y=np.array(targets))
    torch.testing.assert_close(ours.double(), torch.tensor(reference), rtol=1e-6, atol=1e-6)


def test_weighted_sampler_draws_classes_evenly():
    targets = [0] * 90 + [1] * 10
    order = epoch_indices(len(targets), 0, 1, DistContext(), sample_weights(_Targets(targets), 2))
    drawn = Counter(targets[i] for i in order)
    assert len(order) == 100
    # Expected 50/50; 100 draws stay well inside 25..75 (a 5-sigma band).
    assert 25 < drawn[1] < 75


def test_balance_needs_every_class_in_train():
    with pytest.raises(UserError, match="no training images"):
        inverse_frequency_weights(_Targets([0, 0, 1]), 3)
