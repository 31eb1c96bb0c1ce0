"""``accvit-med benchmark``: training and inference images/s and peak memory, side by side."""

from __future__ import annotations

import typer

from accvit_med.cli.options import BatchSizeOpt, DeviceOpt, ImageSizeOpt

DEFAULT_MODELS = "accvit_tiny,maxvit_t,swin_t,convnext_tiny"


def register(app: typer.Typer) -> None:
    app.command("benchmark")(benchmark)


def benchmark(
    models: str = typer.Option(DEFAULT_MODELS, "--models", help="Registry names, comma-separated."),
    batch_size: BatchSizeOpt = 8,
    image_size: ImageSizeOpt = 224,
    iters: int = typer.Option(5, "--iters", min=1, help="Timed rounds; the median step time is reported."),
    warmup: int = typer.Option(2, "--warmup", min=0, help="Untimed rounds first."),
    compile: bool = typer.Option(
        False, "--compile/--no-compile",
        help="torch.compile every model (compiling takes minutes per model; over 15 on a 2-core CPU).",
    ),
    device: DeviceOpt = "auto",
) -> None:
    """Measure training images/s (forward, backward, AdamW step), inference images/s and peak
    training memory of each model, and each model's ratio to maxvit_t (else the first model).

    The models run in one process, interleaved round by round after warm-up, so machine load hits
    all alike: compare ratios within one run. fp32 on CPU; bf16 autocast and cuDNN autotuning on
    CUDA. Peak memory is measured per model in a fresh process: CUDA max_memory_allocated, on CPU
    the peak RSS increase.
    """
    import torch
    from rich.console import Console

    from accvit_med.env import tune_cpu_allocator
    from accvit_med.speed import (
        benchmark_device,
        check_image_size,
        measure_models,
        parse_models,
        precision_label,
        reference_model,
        results_table,
    )

    names = parse_models(models)
    check_image_size(names, image_size)
    target = benchmark_device(device)
    precision = precision_label(target)
    err = Console(stderr=True)
    total = warmup + iters
    allocator = "glibc malloc tuned" if tune_cpu_allocator() else "system malloc"  # as the entry point does
    err.print(f"{target}, {precision}, {torch.get_num_threads()} threads, {allocator}, batch {batch_size}, "
              f"{image_size}px, {warmup} warm-up + {iters} timed rounds{', compiled' if compile else ''}")
    rows = measure_models(
        names, batch_size=batch_size, image_size=image_size, warmup=warmup, iters=iters, device=target,
        compile=compile, on_round=lambda i: err.print(f"  round {i + 1}/{total} done"),
    )
    Console(width=120).print(results_table(rows, reference_model(names), target, precision, batch_size, image_size))
