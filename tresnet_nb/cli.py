"""The command line's parser: one function per command (run, train, probe, predict, gpu-check, sweep, compare,
publish, data) adds its arguments; :mod:`tresnet_nb.__main__` dispatches them. Imports no torch."""

from __future__ import annotations

import argparse


def _parameter_flag(parser: argparse.ArgumentParser, help: str) -> None:
    """``-p KEY VALUE``, repeatable: a notebook or RunConfig parameter."""
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"), help=help)


def _add_run(sub: argparse._SubParsersAction) -> None:
    """The ``run`` command: execute notebooks headless."""
    run = sub.add_parser("run", help="execute notebooks headless with papermill")
    run.add_argument("notebooks", nargs="+", help="notebook paths")
    run.add_argument("--preset", default=None, help="smoke, cpu or paper (fills parameters not given with -p)")
    _parameter_flag(run, "set a notebook parameter; VALUE parsed like papermill's -p")
    run.add_argument("--out", default="runs", help="output folder (default: runs)")
    run.add_argument("--kernel", default=None, help="Jupyter kernel name (default: the notebook's)")


def _add_train(sub: argparse._SubParsersAction) -> None:
    """The ``train`` command: one training job."""
    train = sub.add_parser("train", help="one training job headless; data-parallel under torchrun/accelerate launch")
    train.add_argument("--preset", default=None, help="smoke, cpu (default) or paper")
    _parameter_flag(train, "a RunConfig parameter (upper or lower case); BATCH_SIZE is per process")
    train.add_argument("--out", default=None, help="OUTPUT_DIR (default: runs/train/<the configuration's hash>)")
    train.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm across processes (CUDA only)")


def _add_probe(sub: argparse._SubParsersAction) -> None:
    """The ``probe`` command: the throughput and memory probe."""
    probe = sub.add_parser("probe", help="training/inference throughput and memory beside the paper's V100 table")
    probe.add_argument("--arch", nargs="+", required=True, help="architectures, e.g. tresnet_m resnet50")
    probe.add_argument("--img-size", type=int, default=None, help="input side in pixels (default 224)")
    probe.add_argument("--mode", choices=("infer", "train", "both"), default="both")
    probe.add_argument(
        "--precision",
        choices=("fp32", "bf16", "fp16"),
        default=None,
        help="default: fp16 on CUDA (the paper's mixed precision); on a CPU bf16 where it computes bf16 natively, else fp32",
    )
    probe.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="channels_last memory format (default: on)",
    )
    probe.add_argument(
        "--batch-size",
        default=None,
        help="N or 'max' (CUDA: 90%% of the largest batch that fits; default: max on CUDA, 16 on a CPU)",
    )
    probe.add_argument("--compile", action="store_true", help="torch.compile the model first")
    probe.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 2; 1 on a CPU)")
    probe.add_argument(
        "--repeats", type=int, default=None, help="timed rounds; the median is reported (default 5; 3 on a CPU)"
    )
    probe.add_argument("--steps", type=int, default=None, help="steps per timed round (default 1)")
    probe.add_argument(
        "--budget-gib",
        type=float,
        default=None,
        help="memory for the max-batch estimate (default: the GPU's, or a V100's 16 GiB)",
    )
    probe.add_argument("--no-flops", action="store_true", help="skip the FLOP count and the matmul peak")
    probe.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: the first GPU, else the CPU)")
    probe.add_argument("--json", default=None, help="write the full report as JSON")
    probe.add_argument("--csv", default=None, help="write the table and details as CSV")
    probe.add_argument("--plot", default=None, help="write the bar chart as PNG")


def _add_predict(sub: argparse._SubParsersAction) -> None:
    """The ``predict`` command: predict images with a run, a published model or an ImageNet head."""
    predict = sub.add_parser("predict", help="predict images with your trained run, or with an ImageNet head")
    predict.add_argument("images", nargs="+", help="image files or folders of images")
    predict.add_argument("--run", default=None, help="a finished run's OUTPUT_DIR: its classes, size and preprocessing")
    predict.add_argument(
        "--model", default=None, help="a published folder (publish --to DIR), local-dir:DIR or hf-hub:USER/REPO"
    )
    predict.add_argument(
        "--arch", default=None, help="ImageNet heads: a timm name with its tag, e.g. tresnet_m.miil_in21k"
    )
    predict.add_argument(
        "--weights", default="auto", help="with --arch: a checkpoint file (default: the tag's weights)"
    )
    predict.add_argument("--top", type=int, default=5, help="classes per image (default 5)")
    predict.add_argument("--csv", default=None, help="with --run/--model: write one row per image to this CSV")
    predict.add_argument("--tta", action="store_true", help="with --run/--model: average with the mirrored image")
    predict.add_argument("--hierarchy", action="store_true", help="also decode the 21K hierarchy (semantic softmax)")
    predict.add_argument("--tree", default=None, help="the authors' imagenet21k_miil_tree.pth (default: WordNet's)")
    predict.add_argument(
        "--threshold",
        type=float,
        default=0.5,
        help="multi-label runs: report every label over it; 21K: a level's probability to report it",
    )
    predict.add_argument("--img-size", type=int, default=None, help="input side in pixels (default: the model's)")
    predict.add_argument(
        "--label-set",
        choices=("fall11", "winter21", "imagenet1k"),
        default=None,
        help="the head's label set when the weights are random (default: the tag's)",
    )


def _add_check(sub: argparse._SubParsersAction) -> None:
    """The ``gpu-check`` command: the GPU check."""
    check = sub.add_parser(
        "gpu-check", help="prove and measure the GPU path: tests, probe, finetune, iabn, compile, export"
    )
    check.add_argument(
        "--device", default=None, help="cuda, cuda:1 or cpu (default: the first GPU; cpu only with --quick)"
    )
    check.add_argument("--quick", action="store_true", help="fixed batches, fewer steps (on a CPU: toy sizes)")
    check.add_argument("--out", default="runs/gpu_check", help="report folder (default: runs/gpu_check)")
    check.add_argument(
        "--arch",
        default=None,
        help="a timm CNN to check instead of TResNet-M (and of the paper's set in the probe); iabn then skips",
    )
    check.add_argument(
        "--sections",
        nargs="+",
        default=None,
        choices=("tests", "probe", "finetune", "iabn", "compile", "export"),
        help="run only these sections (default: all, in order)",
    )


def _add_sweep(sub: argparse._SubParsersAction) -> None:
    """The ``sweep`` command: an Optuna sweep."""
    sweep = sub.add_parser("sweep", help="an Optuna study of a notebook's parameters, one papermill run per trial")
    sweep.add_argument("notebook", help="notebook path")
    sweep.add_argument(
        "--trials", type=int, required=True, help="trials to run to an end (a resumed sweep counts earlier ones)"
    )
    sweep.add_argument(
        "--space",
        action="append",
        required=True,
        metavar="KEY=kind:args",
        help="a parameter to search: loguniform:LOW:HIGH, uniform:LOW:HIGH, int:LOW:HIGH or choice:A,B",
    )
    sweep.add_argument("--preset", default=None, help="smoke, cpu or paper (fills parameters not given)")
    _parameter_flag(sweep, "a fixed notebook parameter for every trial")
    sweep.add_argument("--out", default=None, help="sweep folder, resumable (default: runs/sweep/<notebook stem>)")
    sweep.add_argument("--kernel", default=None, help="Jupyter kernel name (default: the notebook's)")


def _add_compare(sub: argparse._SubParsersAction) -> None:
    """The ``compare`` command: notebook 10 headless."""
    compare = sub.add_parser(
        "compare", help="which backbone for my data: accuracy against training and inference speed, one run each"
    )
    compare.add_argument("--preset", default=None, help="smoke, cpu (default) or paper")
    _parameter_flag(
        compare,
        "CANDIDATES ('tresnet_m,resnet50,ARCH=WEIGHTS' or a JSON list; 'paper' adds the paper's set), MINUTES per "
        "candidate, or a RunConfig parameter (DATASET, DATA_ROOT, IMG_SIZE, EPOCHS, WEIGHTS, ...)",
    )
    compare.add_argument(
        "--out", default=None, help="OUTPUT_DIR (default: runs/10_choose_backbone/<the configuration's hash>)"
    )


def _add_publish(sub: argparse._SubParsersAction) -> None:
    """The ``publish`` command: publish a run."""
    publish = sub.add_parser("publish", help="a run as config.json + model.safetensors + model card (timm/HF layout)")
    publish.add_argument("run_dir", help="the run's OUTPUT_DIR (run_config.json, metrics.json, model.safetensors)")
    publish.add_argument("--to", required=True, help="a folder, or hf-hub:USER/REPO to upload to the hub")


def _add_data(sub: argparse._SubParsersAction) -> None:
    """The ``data`` command: verify, fixtures, get."""
    from .data import DATASETS

    data = sub.add_parser("data", help="verify datasets, write fixtures, get the real data")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    for name, text in (
        ("verify", "check layout and labels and open every image; exit 1 with a report"),
        ("fixtures", "write a tiny dataset in the official format"),
        ("get", "download the dataset (public URLs) or print the steps to get it"),
    ):
        cmd = data_sub.add_parser(name, help=text)
        cmd.add_argument("dataset", choices=sorted(DATASETS))
        cmd.add_argument("--root", required=True, help="dataset folder")
        if name == "verify":
            cmd.add_argument("--no-images", action="store_true", help="skip opening every image")
            cmd.add_argument(
                "--recheck",
                action="store_true",
                help="decode every image again, also those checked before and unchanged since",
            )
        if name == "fixtures":
            cmd.add_argument("--seed", type=int, default=0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tresnet_nb", description="TResNet transfer-learning workbook")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run(sub)
    _add_train(sub)
    _add_probe(sub)
    _add_predict(sub)
    _add_check(sub)
    _add_sweep(sub)
    _add_compare(sub)
    _add_publish(sub)
    _add_data(sub)
    return parser
