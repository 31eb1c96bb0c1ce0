"""The run directory: the one place that knows how a run's folder is laid out, read and written.

:mod:`.layout` (RunDir: paths, config.json, history.csv), :mod:`.record` (RunRecord, EpochRow: those
files typed), :mod:`.checkpoints` (the checkpoint schema, RNG states, safetensors weights, a run's
network), :mod:`.claim` (resume/force checks, ownership marker, lock).
"""

from accvit_med.lazy import lazy_exports

# Imported on first use: the sweep reads run folders through .layout and must not import torch,
# which .checkpoints needs.
_EXPORTS = {
    "RunDir": "layout", "default_pretrain_path": "layout", "default_run_path": "layout", "read_run_config": "layout",
    "EpochRow": "record", "RunRecord": "record",
    "checkpoint_kind": "checkpoints", "load_checkpoint": "checkpoints", "load_run_model": "checkpoints",
    "save_checkpoint": "checkpoints",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
