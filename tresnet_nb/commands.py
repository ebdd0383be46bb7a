"""The command-line handlers that need more than one layer: ``python -m tresnet_nb probe`` measures with the probe
and draws with the report, which the probe layer itself may not import."""

from __future__ import annotations

import sys
from typing import Any

import pandas as pd
import torch

from .probe import batch_arg, plan, run_probe
from .probe.measure import UnmeasurableError
from .runtime import device as default_device
from .runtime import device_name


def probe_command(args: Any) -> int:
    """``python -m tresnet_nb probe`` with the parsed ``args``: measure, print the table beside the paper's and the
    details, write JSON/CSV and the bar chart when asked; 2 (and the error) for bad input, else 0."""
    try:
        device = torch.device(args.device) if args.device else default_device()
        settings = plan(
            device,
            "cpu",
            archs=args.arch,
            img_size=args.img_size,
            precision=args.precision,
            batch_size=batch_arg(args.batch_size) if args.batch_size is not None else None,
            mode=args.mode,
            channels_last=args.channels_last,
            compile=args.compile or None,
            warmup=args.warmup,
            repeats=args.repeats,
            steps=args.steps,
            budget_gib=args.budget_gib,
            flops=False if args.no_flops else None,
        )
    except (ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"probe on {device_name(device)}: {settings}", flush=True)
    try:
        report = run_probe(settings, device)
    except UnmeasurableError as err:  # found before that network was timed
        print(f"error: {err}", file=sys.stderr)
        return 2
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(report.table().to_string())
        print(report.details().to_string())
    if report.matmul_peak_flops:
        print(f"matmul peak ({settings.precision}): {report.matmul_peak_flops / 1e9:.1f} GFLOP/s")
    for option, write in ((args.json, report.to_json), (args.csv, report.to_csv)):
        if option:
            print(f"wrote {write(option)}")
    if args.plot:
        from .report.plots import plot_throughput  # matplotlib only when a chart is asked for

        plot_throughput(report, args.plot)
        print(f"wrote {args.plot}")
    return 0
