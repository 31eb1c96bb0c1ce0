"""A fine-tuned run outside PyTorch: ONNX export (verified with ONNX Runtime) and inference from it.

:mod:`.export` writes ``FILE.onnx`` and its sidecar ``FILE.json`` (classes, normalisation, input
size, opset) from a run directory; :mod:`.runtime` predicts from that pair with ONNX Runtime and
numpy only, without torch; :mod:`.preprocess` is the run's evaluation preprocessing in numpy.
"""
