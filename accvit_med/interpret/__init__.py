"""Using a fine-tuned run: predictions on new images and Grad-CAM maps (Section 3.3, Figure 4).

>>> from accvit_med.interpret import load_run, predict_images, explain_images, CamImage
>>> run = load_run("runs/busi/accvit_tiny/seed42")
>>> predict_images(run, ["scan.png"], tta="h").probabilities
>>> explain_images([run], [CamImage(Path("scan.png"))], "gradcam/")
"""

from accvit_med.lazy import lazy_exports

# Imported on first use: ONNX Runtime inference collects and checks images through .images and
# must not import torch, which the other modules need.
_EXPORTS = {
    "CamImage": "explain", "GradcamResult": "explain", "explain_images": "explain", "misclassified_images": "explain",
    "CamBatch": "gradcam", "CamTarget": "gradcam", "grad_cam": "gradcam", "registry_target": "gradcam",
    "IMAGE_EXTENSIONS": "images", "check_readable": "images", "collect_images": "images",
    "TTA_CHOICES": "predict", "ImagePredictions": "predict", "predict_images": "predict",
    "predict_tensors": "predict",
    "LoadedRun": "run", "load_run": "run",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
