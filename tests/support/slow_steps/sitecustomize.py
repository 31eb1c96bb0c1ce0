"""Test support, loaded only by test subprocesses that put this folder on PYTHONPATH.

With ``ACCVIT_MED_TEST_STEP_DELAY=SECONDS`` set, every AdamW step sleeps that long after it runs,
so a test can kill a training run (a sweep's subprocess, a SLURM task) reliably in the middle of
an epoch. It lives with the tests so that the library carries no test hooks.
"""

import os

_DELAY = float(os.environ.get("ACCVIT_MED_TEST_STEP_DELAY", "0") or 0)

if _DELAY > 0:
    import functools
    import time

    import torch

    _step = torch.optim.AdamW.step

    @functools.wraps(_step)
    def _slow_step(self, *args, **kwargs):
        result = _step(self, *args, **kwargs)
        time.sleep(_DELAY)
        return result

    torch.optim.AdamW.step = _slow_step
