"""The run directory: the one place that knows how a run's folder is laid out, read and written.

:mod:`.layout` (paths, config.json, history.csv), :mod:`.checkpoints` (the checkpoint schema, RNG
states, safetensors weights), :mod:`.claim` (resume/force checks, ownership marker, lock).
"""

from accvit_med.rundir.checkpoints import checkpoint_kind, load_checkpoint, save_checkpoint
from accvit_med.rundir.layout import RunDir, default_run_path, read_run_config

__all__ = ["RunDir", "checkpoint_kind", "default_run_path", "load_checkpoint", "read_run_config", "save_checkpoint"]
