"""Writes the dataset notebooks (02-06, 08) from one template, so they follow the same path and stay in step, and
the error analysis (09) and the backbone comparison (10) from the same parts.

Usage: python tools/notebooks.py            (rewrites notebooks/<stem>.ipynb, without outputs)
       python tools/notebooks.py --check    (exit 1 if a committed notebook differs from what this writes)
The quickstart (00) and the probe notebook (01) are written by hand; the 21K notebook (07) by tools/notebook07.py.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tresnet_nb.hosted import SETUP_CELL  # noqa: E402

BASE_PARAMS = (
    "PRESET",
    "ARCH",
    "WEIGHTS",
    "DATASET",
    "DATA_ROOT",
    "IMG_SIZE",
    "BATCH_SIZE",
    "EPOCHS",
    "LR",
    "MAX_ITEMS",
    "SEED",
    "PRECISION",
    "OUTPUT_DIR",
)
# training switches (fields of tresnet_nb.TrainOptions) every dataset notebook exposes, with their defaults
SWITCHES = {
    "INTERACTIVE": None,
    "RECIPE": None,
    "PROGRESSIVE": None,
    "TTA": False,
    "MIXUP": 0.0,
    "CUTMIX": 0.0,
    "ACCUMULATE": 1,
    "GRAD_CHECKPOINTING": False,
    "BALANCED": False,
}


@dataclass(frozen=True)
class Spec:
    stem: str
    title: str
    intro: str
    dataset: str
    data_note: str
    switches: dict[str, object] = field(default_factory=dict)
    submission: bool = False
    pickable: tuple[str, ...] = ()  # datasets the JupyterLab picker offers (default: the notebook's own)


NOTEBOOKS = (
    Spec(
        "02_cifar",
        "CIFAR-10 and CIFAR-100: TResNet-XL at 224 px",
        "The paper fine-tunes TResNet-XL at 224 px to **99.0** (CIFAR-10) and **91.5** (CIFAR-100) top-1. Set "
        '`DATASET` to `"cifar10"` or `"cifar100"`; `PRESET="paper"` selects the paper\'s architecture and size '
        'and `RECIPE="miil"` the authors\' transfer recipe.',
        "cifar100",
        "`DATA_ROOT`: the folder holding `cifar-100-python/` (or `cifar-10-batches-py/`); "
        "`python -m tresnet_nb data get cifar100 --root DIR` downloads and checks it. The pickled batches are read "
        "with a restricted unpickler that accepts numpy arrays only.",
        pickable=("cifar10", "cifar100"),
    ),
    Spec(
        "03_stanford_cars",
        "Stanford Cars: TResNet-L at 368 px",
        "The paper fine-tunes TResNet-L at 368 px to **96.0** top-1 on the 196 car models. Fine-grained, so "
        'resolution matters: `PROGRESSIVE="224:10:64,368:10:32"` fine-tunes at 224 px first, then at 368 px.',
        "stanford_cars",
        "`DATA_ROOT`: the devkit layout (`cars_train/`, `cars_test/`, `devkit/*.mat`, "
        "`cars_test_annos_withlabels.mat`); `python -m tresnet_nb data get stanford_cars --root DIR` says how to "
        "get it. Images are resized once into a cache.",
    ),
    Spec(
        "04_oxford_flowers",
        "Oxford Flowers-102: TResNet-L at 368 px",
        "The paper fine-tunes TResNet-L at 368 px to **99.1** top-1 on the 102 flower species (the official test "
        "split of 6,149 images).",
        "flowers102",
        "`DATA_ROOT`: `jpg/`, `imagelabels.mat` and `setid.mat` from the Visual Geometry Group; "
        "`python -m tresnet_nb data get flowers102 --root DIR` downloads and checks them.",
    ),
    Spec(
        "05_herbarium_2020",
        "Herbarium 2020 (Kaggle FGVC7): a long tail of 32,093 species",
        "The authors placed **2nd of 153 teams** with TResNet. The metric is macro-F1 over the species, so the rare "
        "ones count as much as the common ones: `BALANCED=True` draws training items class-balanced. The run "
        "ends with `submission.csv` (`Id,Predicted`, original category ids) for the competition's test set.",
        "herbarium2020",
        "`DATA_ROOT`: the folder holding `nybg2020/train` and `nybg2020/test` (Kaggle: "
        "`kaggle competitions download -c herbarium-2020-fgvc7`; the Kaggle token stays in `~/.kaggle`, never "
        "in the notebook).",
        {"BALANCED": True},
        submission=True,
    ),
    Spec(
        "06_plant_pathology_2020",
        "Plant Pathology 2020 (Kaggle FGVC7): one class per leaf, mean column-wise ROC-AUC",
        "The authors placed **7th of 1317 teams**. Each image has exactly one of four labels (healthy, "
        "multiple_diseases, rust, scab; the label columns are one-hot), so it trains single-label with softmax, "
        "scored as Kaggle does by the mean ROC-AUC of the four probability columns; the run ends with "
        "`submission.csv` in the competition's format.",
        "plant_pathology",
        "`DATA_ROOT`: `train.csv`, `test.csv` and `images/` (Kaggle: `kaggle competitions "
        "download -c plant-pathology-2020-fgvc7`).",
        submission=True,
    ),
    Spec(
        "08_your_own_data",
        "Your own images: a folder per class, or a CSV",
        'Point `DATA_ROOT` at your images and fine-tune. `DATASET="folder"`: one sub-folder per class (optionally '
        'under `train/` and `valid/`); `DATASET="csv"`: a `labels.csv` with `path,label` (or one 0/1 column per '
        "label, which makes it multi-label). Run `python -m tresnet_nb data verify folder --root DIR` first: it "
        "names every unreadable image and empty class.",
        "folder",
        "Without a `valid/` folder (or a split column) a stratified fifth of the images is held out.",
        pickable=("folder", "csv"),
    ),
)


# Tracking: the parameter, and the last step of every dataset notebook and the quickstart: where the run
# is tracked, and the command that publishes it
TRACKING_PARAM = "TRACKING = None  # an MLflow store: a folder or a server URL (None: MLFLOW_TRACKING_URI, if set)"
# a finished run drops its resumable checkpoint (about 3x the weights) once its final weights are saved
KEEP_PARAM = "KEEP_CHECKPOINT = None  # True: keep checkpoint.pth after the run finishes (about 3x the weights)"
DROP_LINE = "print(tnb.drop_checkpoint(cfg.out, keep=cfg.keep_checkpoint))"
TRACKING_CELLS = [
    (
        "markdown",
        "## Tracking and publishing\nWhere this run's epochs and results are logged (TensorBoard always; "
        "MLflow when `TRACKING` or `MLFLOW_TRACKING_URI` names a store), and the one command that publishes "
        "the model in the Hugging Face / timm layout with a model card.",
        [],
    ),
    ("code", "print(tracker.where())", []),
]


def _id(stem: str, i: int) -> str:
    return hashlib.sha1(f"{stem}:{i}".encode()).hexdigest()[:8]


def _lit(value: object) -> str:
    return repr(value)


def base_parameters(**defaults: object) -> str:
    """The DESIGN.md parameters as the lines of a parameters cell: PRESET "cpu", the others None unless given."""
    return "\n".join(['PRESET = "cpu"'] + [f"{name} = {_lit(defaults.get(name))}" for name in BASE_PARAMS[1:]])


def config_cell(stem: str, imports: str = "", own: tuple[str, ...] = ()) -> str:
    """The cell turning the parameters cell into a saved, seeded RunConfig (RunConfig.from_notebook reads the
    parameters and training switches it knows from the notebook's globals, and the notebook's ``own`` parameters)
    and showing it with the environment."""
    mine = f", own={own!r}" if own else ""
    return (
        f'import tresnet_nb as tnb\n{imports}\ncfg = tnb.RunConfig.from_notebook("{stem}", globals(){mine})\n'
        "cfg.save()\ntnb.seed_everything(cfg.seed)\ntnb.hosted_check()\n"
        "tnb.show(tnb.config_table(cfg))\ntnb.show(tnb.environment())"
    )


def cells(spec: Spec) -> list[tuple[str, str, list[str]]]:
    switches = {**SWITCHES, **spec.switches}
    params = "\n".join(
        [base_parameters(DATASET=spec.dataset), TRACKING_PARAM, KEEP_PARAM]
        + [f"{name} = {_lit(value)}" for name, value in switches.items()]
    )
    submission = (
        '\nsubmission = tnb.kaggle_submission(learn, data, cfg.out / "submission.csv", tta=cfg.options.tta)\n'
        'print(f"Kaggle submission: {submission}")'
        if spec.submission
        else ""
    )
    return [
        (
            "markdown",
            f"# {spec.stem[:2]} · {spec.title}\n\n{spec.intro}\n\n"
            f"Headless: `python -m tresnet_nb run notebooks/{spec.stem}.ipynb -p DATA_ROOT DIR`.",
            [],
        ),
        ("markdown", "On Colab or Kaggle the next cell installs the package; anywhere else it does nothing.", []),
        ("code", SETUP_CELL, []),
        (
            "markdown",
            "## Parameters\nEvery value left at `None` is filled by the preset (`smoke`, `cpu` or "
            "`paper`); anything you set wins. The switches below `TRACKING` are the training options "
            "(`cfg.options`, a `tnb.TrainOptions`) that `tnb.build_learner`, `tnb.fit` and `tnb.evaluate` "
            "read (see docs/training.md).\n\n" + spec.data_note,
            [],
        ),
        ("code", params, ["parameters"]),
        ("markdown", "## Configuration and environment", []),
        (
            "code",
            config_cell(spec.stem) + "\n"
            f"picker = tnb.ConfigPicker(cfg, datasets={spec.pickable or (spec.dataset,)!r}, "
            "interactive=INTERACTIVE)",
            [],
        ),
        (
            "markdown",
            "## Data\nThe dataset as read from `DATA_ROOT` in its official format, a grid of training "
            "images and the items per class.",
            [],
        ),
        (
            "code",
            "cfg = picker.config()  # in JupyterLab: the architecture, weights and dataset picked above\n"
            "spec = tnb.get_dataset(cfg.dataset)\nds = spec.read(cfg.data_root)\nprint(ds.summary())\n"
            "images, labels = tnb.samples(ds)\n"
            'tnb.plot_samples(images, labels, ds.class_names, cfg.out / "samples.png")\n'
            'tnb.plot_class_counts(tnb.split_counts(ds), ds.class_names, cfg.out / "class_counts.png")',
            [],
        ),
        (
            "markdown",
            "## Model\nThe banner says whether the weights are pretrained; preprocessing comes from the "
            "model's timm config.",
            [],
        ),
        (
            "code",
            "model = tnb.load_model(cfg.arch, cfg.weights, num_classes=len(ds.class_names))\n"
            "tnb.weights_banner(tnb.weights_info(model))\ntnb.show(tnb.describe_model(model, cfg.img_size))\n"
            "data = tnb.open_data(cfg, model, tnb.device(), ds)",
            [],
        ),
        (
            "markdown",
            "## Train\nA checkpoint every epoch in `OUTPUT_DIR`: run the notebook again after a crash and it resumes.",
            [],
        ),
        (
            "code",
            "learn = tnb.build_learner(cfg, data.dls, model, task=data.task)\n"
            "tracker = tnb.track(cfg, learn)  # TensorBoard always; MLflow when TRACKING names a store\n"
            "result = tnb.fit(learn, cfg, dls_for=data.dls_for)\n"
            'tnb.plot_training(result.history, cfg.out / "training.png")',
            [],
        ),
        (
            "markdown",
            "## Evaluate\nThe dataset's metric on its evaluation split, per class (or per label), the "
            "most confident mistakes, and a browser of every prediction (a slider in JupyterLab, a table "
            "headless; `INTERACTIVE` forces either).",
            [],
        ),
        (
            "code",
            "evaluation = tnb.evaluate(learn, data)  # with flip TTA when TTA = True\n"
            "tnb.show_evaluation(evaluation, data, cfg.out)\n"
            "browser = tnb.prediction_browser(data.valid_image, evaluation.probs, evaluation.targets, "
            "data.class_names, interactive=INTERACTIVE)",
            [],
        ),
        (
            "markdown",
            "## Artifacts\nThe fine-tuned weights (timm layout), `metrics.json`"
            + (" and the Kaggle submission" if spec.submission else "")
            + "; then the resumable checkpoint is removed (`KEEP_CHECKPOINT=True` keeps it): `finished.json` and "
            "the weights are what a rerun needs.",
            [],
        ),
        (
            "code",
            'tnb.save_weights(learn.model, cfg.out / "model.safetensors", cfg.img_size, data.class_names, data.task)\n'
            "record = tnb.run_record(cfg, model, evaluation, result, learn)\n"
            'tnb.write_metrics(record, cfg.out / "metrics.json", evaluation)'
            + submission
            + "\ntracker.finish(record)\nprint(tnb.summary_line(record))\n"
            + DROP_LINE,
            [],
        ),
        (
            "markdown",
            "## Ours vs the paper\nWhat was run, beside what the paper reports; a reduced run (fewer "
            "epochs, smaller images, random weights) is said to be one.",
            [],
        ),
        ("code", "tnb.show(tnb.paper_table(record))", []),
        *TRACKING_CELLS,
    ]


ANALYSIS_STEM = "09_error_analysis"
# notebook 09's own parameters, after the usual ones and the training switches (used when it trains the run itself)
ANALYSIS_PARAMS = {"RUN_DIR": None, "FOLDS": 4, "NEAR": 0.99, "N_SHOW": 18}


def analysis_cells() -> list[tuple[str, str, list[str]]]:
    """Notebook 09: the steps after training on a finished run of any dataset notebook (or one trained first)."""
    params = "\n".join(
        [base_parameters(DATASET="fashion_mnist")]
        + [f"{name} = {_lit(value)}" for name, value in {**SWITCHES, **ANALYSIS_PARAMS}.items()]
    )
    return [
        (
            "markdown",
            "# 09 · Trust the model: calibration, label errors, duplicates and leakage, where it looks\n\n"
            "The steps after training, on a finished run of any dataset notebook (`RUN_DIR`: its "
            "`OUTPUT_DIR`) or, with `RUN_DIR = None`, on a run this notebook trains first with the "
            "parameters below. Every number here is measured on items the step did not fit on.\n\n"
            "Headless: `python -m tresnet_nb run notebooks/09_error_analysis.ipynb -p RUN_DIR DIR`.",
            [],
        ),
        ("markdown", "On Colab or Kaggle the next cell installs the package; anywhere else it does nothing.", []),
        ("code", SETUP_CELL, []),
        (
            "markdown",
            "## Parameters\nThe usual parameters and training switches describe the run to train when "
            "`RUN_DIR` is `None` (otherwise the run's own configuration is used). `FOLDS`: the "
            "cross-fit behind the label errors (FOLDS trainings on (FOLDS-1)/FOLDS of the training "
            "items). `NEAR`: the similarity (the mean of the cosines of the model's pooled features and of "
            "8 x 8 greyscale thumbnails) from which an evaluation item counts as a near copy of a training "
            "item. `N_SHOW`: items per gallery.",
            [],
        ),
        ("code", params, ["parameters"]),
        ("markdown", "## The run", []),
        (
            "code",
            config_cell(ANALYSIS_STEM) + "\n"
            "run = tnb.open_run(tnb.run_to_analyse(cfg, RUN_DIR), cfg.out)\n"
            "print(tnb.summary_line(run.record))",
            [],
        ),
        (
            "markdown",
            "## Calibration\nTemperature scaling fitted on half of the evaluation split (stratified) and "
            "reported on the other half; expected calibration error over 15 equal-width bins, NLL and "
            "Brier score before and after. The model keeps the temperature: `tnb.predict` and exports "
            "use it.",
            [],
        ),
        ("code", "calibration = tnb.calibration_step(run)", []),
        (
            "markdown",
            "## Label errors\nConfident learning (cleanlab) on out-of-sample probabilities from a "
            "`FOLDS`-fold cross-fit of the run's recipe; most suspect first, and a browser of every training item, "
            "most suspect first (a slider in JupyterLab).",
            [],
        ),
        (
            "code",
            "issues = tnb.label_issue_step(run, folds=FOLDS, n_show=N_SHOW)\n"
            "tnb.show(issues.table.head(N_SHOW))\n"
            "browser = tnb.suspect_browser(run, issues, interactive=INTERACTIVE)",
            [],
        ),
        (
            "markdown",
            "## Duplicates and leakage\nExact copies (content hash) and near copies (the mean of two "
            "cosines: of the model's pooled features and of small greyscale thumbnails; a perceptual hash "
            "where it agrees) within train and between train "
            "and the evaluation split, ranked over all pairs; then the metric without evaluation items "
            "that have a copy in train.",
            [],
        ),
        (
            "code",
            "duplicates = tnb.duplicate_step(run, near=NEAR, n_show=N_SHOW)\ntnb.show(duplicates.table.head(N_SHOW))",
            [],
        ),
        ("markdown", "## Where it looks\nGrad-CAM on the last stage for the most confident mistakes.", []),
        ("code", "tnb.gradcam_step(run, n=min(N_SHOW, 12))", []),
        (
            "markdown",
            "## Artifacts\n`calibration.json`, `label_issues.csv`, `duplicates.csv` and `metrics.json` "
            "(the run's record with this analysis' numbers).",
            [],
        ),
        (
            "code",
            "record = tnb.analysis_record(run, calibration, issues, duplicates)\nprint(tnb.summary_line(record))",
            [],
        ),
    ]


CHOOSE_STEM = "10_choose_backbone"
# notebook 10's own parameters, after the usual ones (no training switches: each candidate has its weights' recipe)
CHOOSE_PARAMS = {
    "CANDIDATES": (None, "None: the paper's set (tresnet_m, resnet50, resnet50d, efficientnet_b1); or a list"),
    "MINUTES": (None, "training minutes per candidate on this device (instead of EPOCHS), turned into epochs"),
}


def choose_cells() -> list[tuple[str, str, list[str]]]:
    """Notebook 10: the paper's backbone comparison on the user's data, size and device."""
    base = base_parameters(DATASET="fashion_mnist").replace(
        "ARCH = None\n", "ARCH = None  # the contract's parameter; here per candidate: name them in CANDIDATES\n"
    )
    params = "\n".join(
        [base, TRACKING_PARAM, KEEP_PARAM]
        + [f"{name} = {_lit(value)}  # {why}" for name, (value, why) in CHOOSE_PARAMS.items()]
    )
    return [
        (
            "markdown",
            "# 10 · Which backbone for my data: accuracy against speed, measured here\n\n"
            "The paper's argument is a trade-off measured side by side: TResNet-M against ResNet50, ResNet50-D, "
            "EfficientNet-B1 and others in training and inference speed and accuracy, on ImageNet and a V100. This "
            "notebook measures it on your data, at your image size, on this device: each candidate is trained "
            "once with the library's recipe for its weights (one normal run folder each, resumable), then its "
            "metric is set against its training and inference speed (the throughput probe's protocol), with the "
            "Pareto front marked and the paper's V100 ranking beside it.\n\n"
            "Headless: `python -m tresnet_nb run notebooks/10_choose_backbone.ipynb -p DATASET folder -p DATA_ROOT "
            "DIR -p CANDIDATES 'tresnet_m,resnet50,tf_efficientnet_lite0=/path/w.pth'`, or the same without "
            "papermill: `python -m tresnet_nb compare -p DATASET folder -p DATA_ROOT DIR -p CANDIDATES ...`.",
            [],
        ),
        ("markdown", "On Colab or Kaggle the next cell installs the package; anywhere else it does nothing.", []),
        ("code", SETUP_CELL, []),
        (
            "markdown",
            "## Parameters\nThe data (`DATASET`, `DATA_ROOT`) as in the other notebooks; `IMG_SIZE`, `BATCH_SIZE`, "
            "`SEED` and `PRECISION` hold for every candidate. `CANDIDATES`: entries `ARCH` (any timm model, "
            "`WEIGHTS` as below), `ARCH.tag`, or `ARCH=WEIGHTS` (`auto`, `none`, a timm tag or a weights file); "
            '`"paper"` among them stands for the paper\'s set. `WEIGHTS`: the weights of entries that name none '
            "(`auto`: the hub's where they can be had, else random initialisation, said in the row). The budget "
            "per candidate is `EPOCHS` or `MINUTES`, not both.",
            [],
        ),
        ("code", params, ["parameters"]),
        (
            "markdown",
            "## The plan\nEvery candidate is checked now (architecture, weights file, image size), so that a typo "
            "stops the notebook before anything trains. Each one's run folder is under `OUTPUT_DIR/candidates/`.",
            [],
        ),
        (
            "code",
            "import tresnet_nb as tnb\n\n"
            "plan = tnb.plan_from_notebook(globals())\ncfg = plan.cfg\n"
            "cfg.save()\ntnb.seed_everything(cfg.seed)\ntnb.hosted_check()\n"
            "tnb.show(plan.config_table())\ntnb.show(tnb.environment())\ntnb.show(plan.table())",
            [],
        ),
        ("markdown", "## Data\nThe dataset as read from `DATA_ROOT` in its official format.", []),
        (
            "code",
            "ds = tnb.get_dataset(cfg.dataset).read(cfg.data_root)\nprint(ds.summary())\n"
            "images, labels = tnb.samples(ds)\n"
            'tnb.plot_samples(images, labels, ds.class_names, cfg.out / "samples.png")',
            [],
        ),
        (
            "markdown",
            "## Run every candidate\nFor each: the speed probe at `IMG_SIZE` on this device, then its training run "
            "(one line per epoch). A finished candidate is read back instead of trained again; a failing one is "
            "recorded with its error and the next one runs. `comparison.csv` and `comparison.md` are rewritten "
            "after each candidate.",
            [],
        ),
        ("code", "comparison = tnb.compare_backbones(plan)\ntnb.show(comparison.table())", []),
        (
            "markdown",
            "## The trade-off\nThe metric against time per image in training and at inference (the Pareto front "
            "in red: no other candidate is both faster and more accurate), the paper's ImageNet / V100 trade-off "
            "beside them, and the speed ranking here against the paper's. Hollow points trained from random "
            "initialisation: their metric is not what pretrained weights would give.",
            [],
        ),
        ("code", "record = tnb.finish_comparison(comparison)\ntnb.show(comparison.ranking_table())", []),
        (
            "markdown",
            "## Artifacts\n`comparison.csv` (one row per candidate), `comparison.md`, `comparison.png` and "
            "`metrics.json` (the most accurate candidate, and every row) in `OUTPUT_DIR`; each candidate's weights, "
            "metrics and TensorBoard log in its run folder (`run_dir`), ready for `predict --run` and `publish`.",
            [],
        ),
        ("code", "print(tnb.summary_line(record))\nprint(cfg.out)", []),
    ]


def notebook_json(stem: str, cell_list: list[tuple[str, str, list[str]]]) -> dict:
    """An nbformat 4.5 notebook of ``(kind, source, tags)`` cells, without outputs, with ids stable per stem."""
    out = []
    for i, (kind, source, tags) in enumerate(cell_list):
        cell = {
            "cell_type": kind,
            "id": _id(stem, i),
            "metadata": {"tags": tags} if tags else {},
            "source": source.splitlines(True),
        }
        if kind == "code":
            cell.update(execution_count=None, outputs=[])
        out.append(cell)
    return {
        "cells": out,
        "metadata": {
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def notebook(spec: Spec) -> dict:
    return notebook_json(spec.stem, cells(spec))


def write_notebooks(folder: Path, notebooks: dict[str, dict]) -> list[Path]:
    """Write each ``stem: notebook`` into ``folder``, formatted by ruff as the repository's notebooks are."""
    paths = []
    for stem, nb in notebooks.items():
        path = folder / f"{stem}.ipynb"
        path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
        paths.append(path)
    subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--quiet", "--config", str(ROOT / "pyproject.toml"), *map(str, paths)],
        check=True,
    )
    return paths


def generate(notebooks: dict[str, dict], tool: str) -> int:
    """The command line of a notebook generator: rewrite ``notebooks`` in notebooks/, or with ``--check`` exit 1
    when a committed one differs from what ``tool`` writes."""
    parser = argparse.ArgumentParser(description=f"Writes {', '.join(notebooks)} (without outputs)")
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    if not args.check:
        write_notebooks(ROOT / "notebooks", notebooks)
        return 0
    stale = []
    with tempfile.TemporaryDirectory() as tmp:
        for fresh in write_notebooks(Path(tmp), notebooks):
            committed = ROOT / "notebooks" / fresh.name
            if not committed.is_file() or committed.read_text() != fresh.read_text():
                stale.append(fresh.name)
    if stale:
        print(f"out of date with {tool}: {stale}; run python {tool}")
        return 1
    return 0


def main() -> int:
    notebooks = {spec.stem: notebook(spec) for spec in NOTEBOOKS}
    notebooks[ANALYSIS_STEM] = notebook_json(ANALYSIS_STEM, analysis_cells())
    notebooks[CHOOSE_STEM] = notebook_json(CHOOSE_STEM, choose_cells())
    return generate(notebooks, "tools/notebooks.py")


if __name__ == "__main__":
    sys.exit(main())
