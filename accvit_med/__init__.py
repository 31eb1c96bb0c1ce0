"""accvit-med: transfer learning on medical images with ACC-ViT and torchvision baselines.

The command line (``accvit-med``) is a thin layer over this library; every command has a
function here that a notebook can call.
"""

__version__ = "0.1.0"

from accvit_med.errors import UserError

__all__ = ["UserError", "__version__"]
