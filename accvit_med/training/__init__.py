"""Training runs: fine-tuning (:mod:`.finetune`) and ImageNet pre-training (:mod:`.pretrain`), both on
one run engine (:mod:`.engine`: context, run directory claim, what each epoch writes).

Modules: recipe (FinetuneRecipe, DataSpec, RunOptions; FinetuneConfig joins them), run_config (the run
folder, resume), train_state (TrainState, run handlers), run_split (which split a run reads), data (loaders, balancing),
model_setup (model + weights of a run), loop (one epoch, predictions), part_predictions (val/test
predictions and their files), evaluate_run (re-score a finished run: ``accvit-med evaluate``),
context (RunContext), engine (shared scaffolding), distributed (torchrun helpers).

>>> from accvit_med.training.recipe import FinetuneConfig
>>> from accvit_med.training.finetune import finetune
>>> result = finetune(FinetuneConfig(dataset="ham10000", model="convnext_tiny"))  # doctest: +SKIP
>>> result.run_dir, result.metrics["macro_f1"]                                    # doctest: +SKIP

Submodules are imported explicitly (nothing here imports torch), so ``accvit-med --help`` stays fast.
"""
