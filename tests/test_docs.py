"""docs/cli.md stays in step with ``--help``: every command and option the CLI has is documented
there, and every option documented there exists. Derived from the Typer app's command objects, so
a new command or option fails this test until its row is added."""

from __future__ import annotations

import re
from pathlib import Path

import typer

from accvit_med.cli import app

CLI_DOC = Path(__file__).resolve().parent.parent / "docs" / "cli.md"
SECTION = re.compile(r"^## `accvit-med ([\w-]+)`\s*$", re.MULTILINE)
OPTION = re.compile(r"(?<![\w-])(--?[A-Za-z][\w-]*)")
# Every command takes --help/-h (documented once, in the top-level table); they are not params.
HELP = {"--help", "-h"}


def _cli_surface() -> dict[str, tuple[set[str], set[str]]]:
    """{command ('' for the top level): (option spellings, argument names)} as --help lists them."""
    group = typer.main.get_command(app)
    surface = {}
    for name, command in [("", group), *sorted(group.commands.items())]:
        options, arguments = set(), set()
        for param in command.params:
            if type(param).__name__.endswith("Argument"):
                arguments.add(param.name.upper())
            elif not getattr(param, "hidden", False):
                options.update(param.opts)
                options.update(param.secondary_opts)
        surface[name] = (options, arguments)
    return surface


def _documented(text: str) -> dict[str, tuple[set[str], str]]:
    """{command: (option spellings in its options table's first column, its section text)}."""
    starts = [(m.start(), m.group(1)) for m in SECTION.finditer(text)]
    bounds = [(0, "")] + starts
    sections = {}
    for i, (start, name) in enumerate(bounds):
        end = bounds[i + 1][0] if i + 1 < len(bounds) else len(text)
        body = text[start:end]
        rows = [line.split("|")[1] for line in body.splitlines() if line.startswith("| `")]
        options = {token for cell in rows for token in OPTION.findall(cell)}
        sections[name] = (options, body)
    return sections


def _problems(surface, documented) -> list[str]:
    problems = []
    for command, (options, arguments) in surface.items():
        where = f"`accvit-med {command}`" if command else "the top-level options table"
        if command not in documented:
            problems.append(f"docs/cli.md has no section '## `accvit-med {command}`' for the command {command!r}")
            continue
        doc_options, body = documented[command]
        for option in sorted(options - doc_options):
            problems.append(f"docs/cli.md, section {where}: option {option} (in --help) "
                            "has no row in its options table")
        for option in sorted(doc_options - options - (HELP if not command else set())):
            problems.append(f"docs/cli.md, section {where}: option {option} is documented "
                            "but `--help` does not list it")
        for argument in sorted(arguments):
            if f"`{argument}" not in body:
                problems.append(f"docs/cli.md, section {where}: argument {argument} (in --help) is not documented")
    for command in sorted(set(documented) - set(surface)):
        problems.append(f"docs/cli.md documents `accvit-med {command}`, which is not a command")
    return problems


def test_every_command_and_option_in_help_is_in_docs_cli_md_and_nothing_else():
    problems = _problems(_cli_surface(), _documented(CLI_DOC.read_text(encoding="utf-8")))
    assert not problems, "docs/cli.md is out of step with --help:\n" + "\n".join(problems)


def test_the_check_names_what_is_missing_and_where():
    text = CLI_DOC.read_text(encoding="utf-8")
    lr_row = next(line for line in text.splitlines() if line.startswith("| `--lr` | 5e-5"))
    edited = text.replace(lr_row + "\n", "").replace("| `--seed` | 42 | random seed", "| `--seeds` | 42 | random seed")
    edited = edited.replace("## `accvit-med info`", "## `accvit-med infos`")
    assert sorted(_problems(_cli_surface(), _documented(edited))) == sorted([
        "docs/cli.md, section `accvit-med finetune`: option --lr (in --help) has no row in its options table",
        "docs/cli.md, section `accvit-med split`: option --seed (in --help) has no row in its options table",
        "docs/cli.md, section `accvit-med split`: option --seeds is documented but `--help` does not list it",
        "docs/cli.md has no section '## `accvit-med info`' for the command 'info'",
        "docs/cli.md documents `accvit-med infos`, which is not a command",
    ])
