"""Using a fine-tuned run: predictions on new images and Grad-CAM maps (Section 3.3, Figure 4).

>>> from accvit_med.interpret import load_run, predict_images, explain_images, CamImage
>>> run = load_run("runs/busi/accvit_tiny/seed42")
>>> predict_images(run, ["scan.png"], tta="h").probabilities
>>> explain_images([run], [CamImage(Path("scan.png"))], "gradcam/")
"""

from accvit_med.interpret.explain import CamImage, GradcamResult, explain_images, misclassified_images
from accvit_med.interpret.gradcam import CamBatch, CamTarget, grad_cam, registry_target
from accvit_med.interpret.images import IMAGE_EXTENSIONS, check_readable, collect_images
from accvit_med.interpret.predict import TTA_CHOICES, ImagePredictions, predict_images, predict_tensors
from accvit_med.interpret.run import LoadedRun, load_run

__all__ = [
    "IMAGE_EXTENSIONS",
    "TTA_CHOICES",
    "CamBatch",
    "CamImage",
    "CamTarget",
    "GradcamResult",
    "ImagePredictions",
    "LoadedRun",
    "check_readable",
    "collect_images",
    "explain_images",
    "grad_cam",
    "load_run",
    "misclassified_images",
    "predict_images",
    "predict_tensors",
    "registry_target",
]
