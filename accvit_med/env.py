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


# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


def tune_cpu_allocator() -> bool:
    """Let glibc malloc keep freed tensor memory for reuse instead of handing it back to the OS.

    glibc serves every allocation over 32 MiB with a fresh mmap and unmaps it on free, so each
    large activation of a CPU training step page-faults its memory in again: a batch of 8
    224-pixel images through ACC-ViT-T allocates hundreds of such tensors per step. Keeping the
    heap (no mmap; trimming only past 2 GiB free at its top) removes those faults, as jemalloc or
    tcmalloc would. The cost is
    memory: freed memory stays with the process until it exits, and the peak of two accvit_tiny
    training steps at batch 8 rose 5% (5693 -> 5957 MiB resident). Called by the
    command-line entry point; ``ACCVIT_MED_SYSTEM_MALLOC=1`` leaves malloc as it is. Returns
    whether the settings were applied (False off glibc, e.g. macOS or musl).
    """
    import ctypes
    import os

    if os.environ.get("ACCVIT_MED_SYSTEM_MALLOC", "") not in ("", "0"):
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # only glibc has it, and only glibc's mallopt takes these codes
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
