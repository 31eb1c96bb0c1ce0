"""What this process runs on: library versions and devices (recorded in every run's config)."""

from __future__ import annotations

import platform
import sys


def environment_summary() -> dict[str, str]:
    import numpy
    import torch
    import torchvision

    from accvit_med import __version__

    summary = {
        "accvit-med": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": numpy.__version__,
        "cpu threads": str(torch.get_num_threads()),
    }
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        summary["cuda"] = f"{torch.version.cuda} ({', '.join(names)})"
    else:
        summary["cuda"] = "not available (CPU only)"
    return summary
