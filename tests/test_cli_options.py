"""Options declared once: recipe options derived from a dataclass, shared aliases, the rank question."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any, Optional

import pytest
import typer
from typer.testing import CliRunner

from accvit_med.cli import app
from accvit_med.cli.options import DeviceOpt, recipe_options
from accvit_med.recipe_fields import documented, field_kinds
from accvit_med.training.recipe import FinetuneConfig

runner = CliRunner()


@dataclass
class ToyRecipe:
    name: str = "toy"  # not documented: no option
    lr: float = documented(5e-5, help="Learning rate.")
    warmup: Optional[int] = documented(None, flag="--warm", metavar="STEPS", help="Warm-up steps.")
    ema: bool = documented(True, help="Keep an average.")
    device: str = "auto"


def _toy_app(received: dict) -> typer.Typer:
    toy = typer.Typer()

    @toy.command()
    @recipe_options(ToyRecipe)
    def run(recipe: dict[str, Any] = None, device: DeviceOpt = None, out: str = typer.Option("x", "--out")) -> None:
        received.update(recipe=recipe, out=out)

    @toy.command()
    def other() -> None:  # a second command, so Typer keeps `run` as a subcommand
        pass

    return toy


def test_derived_options_pass_only_what_was_given():
    received: dict = {}
    toy = _toy_app(received)
    result = runner.invoke(toy, ["run", "--lr", "0.1", "--warm", "3", "--no-ema", "--out", "y"])
    assert result.exit_code == 0, result.output
    assert received == {"recipe": {"lr": 0.1, "warmup": 3, "ema": False}, "out": "y"}
    result = runner.invoke(toy, ["run", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert received["recipe"] == {"device": "cpu"}  # a shared alias naming a recipe field joins the recipe
    result = runner.invoke(toy, ["run", "--name", "z"])  # undocumented fields are not options
    assert result.exit_code == 2


def test_help_shows_the_dataclass_defaults_and_help():
    result = runner.invoke(_toy_app({}), ["run", "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    text = result.output
    assert re.search(r"--lr .*Learning rate\. \[default: \(5e-5\)\]", text)
    assert re.search(r"--warm .*STEPS .*Warm-up steps\.", text) and "[default: (None)]" not in text
    assert re.search(r"--ema +--no-ema .*Keep an average\. \[default: \(ema\)\]", text)
    assert re.search(r"--device .*\[default: \(auto\)\]", text)  # the recipe's default, shown on the alias


def test_finetune_has_one_option_per_documented_field_and_the_old_ones():
    command = typer.main.get_command(app).commands["finetune"]
    options = {opt for param in command.params for opt in param.opts}
    documented_fields = [f.name for f in dataclasses.fields(FinetuneConfig) if "help" in f.metadata]
    expected = {"--ema" if name == "ema_decay" else "--" + name.replace("_", "-") for name in documented_fields}
    assert expected <= options
    # The option set is exactly what it was before the options were derived, plus --track (tracking).
    assert options == {
        "--dataset", "--split", "--data-dir", "--model", "--weights", "--out", "--name", "--epochs", "--batch-size",
        "--lr", "--weight-decay", "--ema", "--image-size", "--workers", "--seed", "--patience", "--balance",
        "--device", "--amp", "--channels-last", "--compile", "--grad-checkpointing", "--cache", "--cache-dir",
        "--config", "--resume", "--force", "--track",
    }


def test_field_kinds_read_optional_as_its_type():
    assert field_kinds(ToyRecipe) == {"name": str, "lr": float, "warmup": int, "ema": bool, "device": str}
    kinds = field_kinds(FinetuneConfig)
    assert kinds["ema_decay"] is float and kinds["patience"] is int and kinds["cache"] is bool


def test_range_checks_name_the_option():
    result = runner.invoke(app, ["evaluate", "--run", "nowhere", "--batch-size", "0"])
    assert result.exit_code == 2
    assert "--batch-size" in result.output


def test_is_main_process_follows_the_process_group_then_rank(monkeypatch, tmp_path):
    import torch.distributed as dist

    from accvit_med.training.distributed import is_main_process

    monkeypatch.setenv("RANK", "1")
    assert not is_main_process()
    monkeypatch.setenv("RANK", "0")
    assert is_main_process()
    monkeypatch.delenv("RANK")
    assert is_main_process()
    # Inside a process group its rank decides, whatever the environment says.
    monkeypatch.setenv("RANK", "3")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        assert dist.get_rank() == 0 and is_main_process()
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("value, expected", [(5e-5, "5e-5"), (1e-8, "1e-8"), (0.99998, "0.99998"), (224, "224")])
def test_defaults_are_written_as_people_write_them(value, expected):
    from accvit_med.recipe_fields import format_value

    assert format_value(value) == expected


def test_a_recipe_field_with_a_default_of_its_own_is_refused():
    with pytest.raises(TypeError, match="must default to None"):
        @recipe_options(ToyRecipe)
        def run(recipe: dict[str, Any] = None, device: DeviceOpt = "cpu") -> None:
            pass
