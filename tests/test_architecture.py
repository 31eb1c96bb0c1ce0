"""The dependency direction of docs/architecture.md against the real imports of every module.

The layers and the allowed upward imports are read from the doc itself (its ```layers block and the
table after it), so the doc and this test cannot drift: a new upward import fails, and so does a
package missing from the layers or an allowed import that the code no longer has.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "accvit_med"
DOC = ROOT / "docs" / "architecture.md"
EXEMPT = {"__init__", "__main__"}  # the package's own entry points sit above every layer


def layers_section(text: str) -> str:
    """The doc's '## Layers' section: its ```layers block and its table of allowed upward imports."""
    section = re.search(r"^## Layers\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert section, f"{DOC} has no '## Layers' section"
    return section.group(1)


def doc_layers(text: str) -> dict[str, int]:
    """Top package -> its layer's rank (0 = top) from the doc's ```layers block."""
    block = re.search(r"```layers\n(.*?)```", text, re.S)
    assert block, f"{DOC} has no ```layers block"
    ranks: dict[str, int] = {}
    for rank, line in enumerate(line for line in block.group(1).splitlines() if line.strip()):
        for name in (part.strip() for part in line.split(",")):
            assert name not in ranks, f"{name} is in two layers of {DOC}"
            ranks[name] = rank
    return ranks


def doc_allowed(text: str) -> set[tuple[str, str]]:
    """(importing module, imported module) pairs of the doc's table of upward imports."""
    rows = re.findall(r"^\| `(accvit_med\.)?([\w.]+)` \| `(accvit_med\.)?([\w.]+)` \|", text, re.M)
    return {(f"accvit_med.{importer}", f"accvit_med.{imported}") for _, importer, _, imported in rows}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> list[tuple[str, int]]:
    """Every accvit_med module ``path`` imports (relative imports resolved), with its line."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            if base == "accvit_med":  # ``from accvit_med import datasets``: the names may be subpackages
                found += [(_root_name(alias.name), node.lineno) for alias in node.names]
            else:
                found.append((base, node.lineno))
    return [(target, line) for target, line in found if target.split(".")[0] == "accvit_med"]


def _root_name(name: str) -> str:
    """``accvit_med.<name>`` where it is a module or package, else the root package (``__version__``)."""
    is_module = (PACKAGE / f"{name}.py").is_file() or (PACKAGE / name / "__init__.py").is_file()
    return f"accvit_med.{name}" if is_module else "accvit_med"


def top_package(module: str) -> str:
    return module.split(".")[1] if "." in module else "__init__"


def upward_imports(ranks: dict[str, int]) -> dict[tuple[str, str], str]:
    """(importer, imported) -> 'file:line' for each import into a higher layer."""
    upward = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        importer = module_name(path)
        source = top_package(importer)
        if source in EXEMPT:
            continue
        for target, line in imported_modules(path):
            if top_package(target) not in EXEMPT and ranks[top_package(target)] < ranks[source]:
                upward[(importer, target)] = f"{path.relative_to(ROOT)}:{line}"
    return upward


def test_every_package_is_in_one_layer_of_the_doc():
    ranks = doc_layers(layers_section(DOC.read_text(encoding="utf-8")))
    present = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
               if (p.suffix == ".py" or (p / "__init__.py").is_file())} - EXEMPT
    assert not present - set(ranks), f"add these to the layers of {DOC}: {sorted(present - set(ranks))}"
    assert not set(ranks) - present, f"{DOC}'s layers name what does not exist: {sorted(set(ranks) - present)}"


def test_imports_point_down_the_layers_of_the_doc():
    text = layers_section(DOC.read_text(encoding="utf-8"))
    upward = upward_imports(doc_layers(text))
    allowed = doc_allowed(text)
    new = [f"{where}: {importer} imports {imported}" for (importer, imported), where in upward.items()
           if (importer, imported) not in allowed]
    assert not new, "imports up the layers of docs/architecture.md:\n" + "\n".join(new)
    stale = sorted(allowed - set(upward))
    assert not stale, f"{DOC} allows upward imports the code no longer has: {stale}"
