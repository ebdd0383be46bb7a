"""Command line (DESIGN.md):

python -m tresnet_nb run NOTEBOOK... [--preset NAME] [-p KEY VALUE]... [--out DIR]
python -m tresnet_nb train [--preset NAME] [-p KEY VALUE]... [--out DIR] [--sync-bn]
    one training job headless (metrics.json and model.safetensors in DIR); BATCH_SIZE is per process, so that
    `torchrun --nproc_per_node=N -m tresnet_nb train ...` (or `accelerate launch --multi_gpu --num_processes N -m
    tresnet_nb train ...`) trains data-parallel with a global batch of N x BATCH_SIZE
python -m tresnet_nb data verify DATASET --root PATH [--recheck]
python -m tresnet_nb data fixtures DATASET --root PATH
python -m tresnet_nb data get DATASET --root PATH
python -m tresnet_nb predict IMAGE_OR_FOLDER... --run RUN_DIR | --model DIR [--top K] [--csv FILE] [--tta]
    your trained model's predictions with its own classes, size, preprocessing and temperature (report.inference)
python -m tresnet_nb predict IMAGE... --arch TAG [--weights FILE] [--top K] [--hierarchy] [--tree FILE]
    readable ImageNet-1K/21K predictions (synset, lemma, probability) and the 21K hierarchy (tresnet_nb.heads21k)
python -m tresnet_nb gpu-check [--device cuda|cpu] [--quick] [--out DIR] [--sections S ...]
    prove and measure the GPU path on one device: gpu_check.json / gpu_check.md (tresnet_nb.gpucheck)
python -m tresnet_nb sweep NOTEBOOK --trials N --space 'KEY=kind:args'... [--preset NAME] [-p KEY VALUE]... [--out DIR]
    an Optuna study of the notebook's parameters, one papermill run per trial (tresnet_nb.sweep)
python -m tresnet_nb publish RUN_DIR --to DIR|hf-hub:USER/REPO
    the run in the Hugging Face / timm layout: config.json, model.safetensors, a model card (tresnet_nb.report.publish)
python -m tresnet_nb probe --arch A [A ...] [--img-size N] [--mode infer|train|both] [--precision fp32|bf16|fp16]
    [--channels-last] [--batch-size N|max] [--json FILE] [--csv FILE] [--plot FILE]
    throughput and memory beside the paper's V100 table (tresnet_nb.probe)
"""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    from .data import DATASETS

    parser = argparse.ArgumentParser(prog="python -m tresnet_nb", description="TResNet transfer-learning workbook")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="execute notebooks headless with papermill")
    run.add_argument("notebooks", nargs="+", help="notebook paths")
    run.add_argument("--preset", default=None, help="smoke, cpu or paper (fills parameters not given with -p)")
    run.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        default=[],
        metavar=("KEY", "VALUE"),
        help="set a notebook parameter; VALUE parsed like papermill's -p",
    )
    run.add_argument("--out", default="runs", help="output folder (default: runs)")
    run.add_argument("--kernel", default=None, help="Jupyter kernel name (default: the notebook's)")

    train = sub.add_parser("train", help="one training job headless; data-parallel under torchrun/accelerate launch")
    train.add_argument("--preset", default=None, help="smoke, cpu (default) or paper")
    train.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        default=[],
        metavar=("KEY", "VALUE"),
        help="a RunConfig parameter (upper or lower case); BATCH_SIZE is per process",
    )
    train.add_argument("--out", default=None, help="OUTPUT_DIR (default: runs/train/<the configuration's hash>)")
    train.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm across processes (CUDA only)")

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

    check = sub.add_parser(
        "gpu-check", help="prove and measure the GPU path: tests, probe, finetune, iabn, compile, export"
    )
    check.add_argument(
        "--device", default=None, help="cuda, cuda:1 or cpu (default: the first GPU; cpu only with --quick)"
    )
    check.add_argument("--quick", action="store_true", help="fixed batches, fewer steps (on a CPU: toy sizes)")
    check.add_argument("--out", default="runs/gpu_check", help="report folder (default: runs/gpu_check)")
    check.add_argument(
        "--sections",
        nargs="+",
        default=None,
        choices=("tests", "probe", "finetune", "iabn", "compile", "export"),
        help="run only these sections (default: all, in order)",
    )

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
    sweep.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        default=[],
        metavar=("KEY", "VALUE"),
        help="a fixed notebook parameter for every trial",
    )
    sweep.add_argument("--out", default=None, help="sweep folder, resumable (default: runs/sweep/<notebook stem>)")
    sweep.add_argument("--kernel", default=None, help="Jupyter kernel name (default: the notebook's)")

    publish = sub.add_parser("publish", help="a run as config.json + model.safetensors + model card (timm/HF layout)")
    publish.add_argument("run_dir", help="the run's OUTPUT_DIR (run_config.json, metrics.json, model.safetensors)")
    publish.add_argument("--to", required=True, help="a folder, or hf-hub:USER/REPO to upload to the hub")

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
    return parser


def data_command(args: argparse.Namespace) -> int:
    from .data import DatasetError, get_dataset
    from .data.verify import verify

    spec = get_dataset(args.dataset)
    if args.data_command == "fixtures":
        root = spec.write_fixture(args.root, seed=args.seed)
        report = verify(args.dataset, root)
        print(f"wrote a {args.dataset} fixture at {root}")
        print(report.text())
        return 0 if report.ok else 1
    if args.data_command == "verify":
        report = verify(args.dataset, args.root, open_images=not args.no_images, recheck=args.recheck)
        print(report.text())
        return 0 if report.ok else 1
    download = getattr(spec.module, "download", None)
    if download is None:
        print(
            f"{args.dataset} cannot be downloaded automatically.\nHow to get it: {spec.get_it}\n"
            f"Expected layout under {args.root}: {spec.layout}"
        )
        return 1
    try:
        print(f"downloaded {args.dataset} to {download(args.root)}")
    except (DatasetError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


def predict(args: argparse.Namespace) -> int:
    """``predict``: with --run or --model (or --weights naming a file this library trained) the run's own classes;
    with --arch alone an ImageNet head's."""
    given = [name for name in ("run", "model", "arch") if getattr(args, name)]
    if len(given) != 1:
        print(
            "error: give one of --run RUN_DIR (a run you trained), --model DIR (a published one) or --arch TAG "
            f"(ImageNet weights); got {['--' + g for g in given] or 'none'}",
            file=sys.stderr,
        )
        return 2
    if args.arch is None or _trained_file(args.weights):
        if args.arch is not None:
            print(
                f"{args.weights} was trained by tresnet_nb: predicting with its own classes, size and "
                "preprocessing (predict --model FILE says the same)",
                file=sys.stderr,
            )
        from .report.inference import predict_run_command

        return predict_run_command(args)
    from .heads21k.predict import predict_command

    return predict_command(args)


def _trained_file(weights: str | None) -> bool:
    from pathlib import Path

    if not weights or not weights.endswith(".safetensors") or not Path(weights).is_file():
        return False
    from .model.weights import read_trained_with

    return read_trained_with(weights) is not None


def main(argv: list[str] | None = None) -> int:
    given = sys.argv[1:] if argv is None else argv
    if given[:1] == ["gpu-check"] and not {"-h", "--help"} & set(given):
        from .bundle import ensure_bundle

        ensure_bundle()  # a bare CUDA image: fastai and its family from gpu_bundle/, before anything imports them
    args = build_parser().parse_args(argv)
    if args.command == "gpu-check":
        if args.device == "cpu" and not args.quick:
            print("error: --device cpu runs the toy-size check only; add --quick", file=sys.stderr)
            return 2
        from .gpucheck import gpu_check_command

        return gpu_check_command(args)
    if args.command == "data":
        return data_command(args)
    if args.command == "probe":
        from .commands import probe_command

        return probe_command(args)
    if args.command == "sweep":
        from .sweep import sweep_command

        return sweep_command(args)
    if args.command == "publish":
        from .report.publish import publish_command

        return publish_command(args.run_dir, args.to)
    if args.command == "predict":
        return predict(args)
    from .runner import parse_value, run_notebooks

    params = {key: parse_value(value) for key, value in args.parameter}
    if args.command == "train":
        from .steps.job import train_command

        if len({key.upper() for key, _ in args.parameter}) < len(args.parameter):
            print(f"error: a parameter is given twice in {[key for key, _ in args.parameter]}", file=sys.stderr)
            return 2
        return train_command(args.preset, params, args.out, args.sync_bn)
    try:
        outcomes = run_notebooks(args.notebooks, args.out, args.preset, params, args.kernel)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0 if all(o.status == "ok" for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
