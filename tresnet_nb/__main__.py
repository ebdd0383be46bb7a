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
python -m tresnet_nb compare [--preset NAME] [-p CANDIDATES 'A,B,ARCH=WEIGHTS'] [-p MINUTES M] [-p KEY VALUE]... [--out DIR]
    which backbone for my data: one run per candidate, its metric beside training and inference speed on this device,
    comparison.csv / comparison.md / comparison.png (tresnet_nb.compare; notebooks/10_choose_backbone.ipynb)
python -m tresnet_nb publish RUN_DIR --to DIR|hf-hub:USER/REPO
    the run in the Hugging Face / timm layout: config.json, model.safetensors, a model card (tresnet_nb.report.publish)
python -m tresnet_nb probe --arch A [A ...] [--img-size N] [--mode infer|train|both] [--precision fp32|bf16|fp16]
    [--channels-last] [--batch-size N|max] [--json FILE] [--csv FILE] [--plot FILE]
    throughput and memory beside the paper's V100 table (tresnet_nb.probe)
"""

from __future__ import annotations

import argparse
import sys

from .cli import build_parser


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
    if args.command in ("train", "compare"):
        if len({key.upper() for key, _ in args.parameter}) < len(args.parameter):
            print(f"error: a parameter is given twice in {[key for key, _ in args.parameter]}", file=sys.stderr)
            return 2
        if args.command == "compare":
            from .compare import compare_command

            return compare_command(args.preset, params, args.out)
        from .steps.job import train_command

        return train_command(args.preset, params, args.out, args.sync_bn)
    try:
        outcomes = run_notebooks(args.notebooks, args.out, args.preset, params, args.kernel)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0 if all(o.status == "ok" for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
