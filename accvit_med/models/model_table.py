"""Parameters and FLOPs of every registry model at 224 px: data for ``accvit-med models``.

Counted once by :func:`accvit_med.models.summary.count_model` (parameters with a 1000-class head;
FLOPs of one image, fvcore conventions, see :mod:`accvit_med.models.flops`) and written here by::

    python -m accvit_med.models.model_table        # rewrites this file from fresh counts

Regenerate it after adding a model or changing one's structure; tests/test_models.py recounts
every row and fails, naming the model, when a row differs from the count or a model is missing.
"""

from __future__ import annotations

import re
from pathlib import Path

IMAGE_SIZE = 224

# name: (parameters, FLOPs)
COUNTS_224: dict[str, tuple[int, int]] = {
    "accvit_femto": (4387250, 1049466624),
    "accvit_pico": (9531510, 2216731776),
    "accvit_nano": (16623946, 3812351488),
    "accvit_tiny": (28325720, 5694075392),
    "accvit_small": (62824162, 11589573376),
    "accvit_base": (103459048, 22316373760),
    "swin_t": (28288354, 4509232128),
    "convnext_tiny": (28589128, 4470437376),
    "maxvit_t": (30919624, 5650874880),
    "accvit_nano_mbconv": (16902976, 4858760192),
    "accvit_nano_atrous_conv": (19326688, 4936268800),
    "accvit_nano_shared_mlp": (16598560, 3803018752),
    "accvit_nano_convnext_mlp": (16718602, 3843084288),
}


def render(counts: dict[str, tuple[int, int]]) -> str:
    """This module's source with ``counts`` as its table (the rest of the file kept as it is)."""
    text = Path(__file__).read_text(encoding="utf-8")
    rows = "".join(f'    "{name}": ({params}, {flops}),\n' for name, (params, flops) in counts.items())
    table = re.compile(r"^(COUNTS_224: .*= \{\n).*?^\}$", re.MULTILINE | re.DOTALL)
    return table.sub(lambda match: match.group(1) + rows + "}", text, count=1)


def main() -> None:
    from accvit_med.fileio import atomic_write_text
    from accvit_med.models.registry import list_models
    from accvit_med.models.summary import count_model

    counts = {name: count_model(name, IMAGE_SIZE) for name in list_models(design_study=True)}
    atomic_write_text(Path(__file__), render(counts))
    print(f"wrote {len(counts)} rows to {Path(__file__)}")


if __name__ == "__main__":
    main()
