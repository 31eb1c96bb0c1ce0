"""``--check``: open every image under the image policy and list those that cannot be read.

A truncated download or a zero-byte file otherwise surfaces hours later, mid-epoch, as a crash in
a data-loader worker. JPEGs are decoded in draft mode (reduced DCT scale): it still reads every
byte, so truncation is caught, at a fraction of the cost of a full decode of a 3000 px fundus photo.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Collection, Optional, Sequence

from accvit_med.datasets.imagepolicy import image_problem
from accvit_med.progress import progress_bar


def find_unreadable(root: Optional[Path], paths: Sequence[str], progress: bool = True,
                    decoded: Collection[str] = ()) -> list[tuple[str, str]]:
    """``[(path, reason), ...]`` for the ``paths`` the image policy refuses.

    ``root``: the data root the paths are relative to, whose symlink rule applies; None for files
    named as they are (``Path(".")`` means the same). ``decoded``: paths known to decode (cached
    under this policy): only the rules that need no decoding are applied to them.

    Threads, not processes: Pillow releases the GIL while decoding, and threads start instantly.
    """
    if root is not None and Path(root) == Path("."):
        root = None
    base = Path(root) if root is not None else Path()
    workers = min(8, os.cpu_count() or 1)
    problems = []
    with ThreadPoolExecutor(workers) as pool, progress_bar(progress) as bar:
        results = pool.map(lambda p: image_problem(base / p, root, decode=p not in decoded), paths)
        for i, reason in enumerate(bar.track(results, total=len(paths), description="checking images")):
            if reason is not None:
                problems.append((paths[i], reason))
    return problems
