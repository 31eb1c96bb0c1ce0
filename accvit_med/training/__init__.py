"""Fine-tuning (and ImageNet pre-training) engines: recipe, loop, checkpoints, DDP helpers.

>>> from accvit_med.training.recipe import FinetuneConfig
>>> from accvit_med.training.finetune import finetune
>>> result = finetune(FinetuneConfig(dataset="ham10000", model="convnext_tiny"))  # doctest: +SKIP
>>> result.run_dir, result.metrics["macro_f1"]                                    # doctest: +SKIP

Submodules are imported explicitly (nothing here imports torch), so ``accvit-med --help`` stays fast.
"""
