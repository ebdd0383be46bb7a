"""Writes notebooks/07_imagenet21k_heads.ipynb (without outputs), so that its cells stay reviewable as Python.

Usage: python tools/notebook07.py            (rewrites the notebook)
       python tools/notebook07.py --check    (exit 1 if the committed notebook differs from what this writes)
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tools/: the shared notebook builder

from notebooks import base_parameters, config_cell, generate, notebook_json  # noqa: E402
from tresnet_nb.hosted import SETUP_CELL  # noqa: E402

STEM = "07_imagenet21k_heads"
PARAMETERS = (
    base_parameters(ARCH="tresnet_m.miil_in21k", DATASET="fashion_mnist")
    + """
INTERACTIVE = None  # widgets: None shows them when a notebook frontend runs this; True or False forces either
LABEL_SET = None  # the head of random weights: None (the tag's: fall11), "fall11" or "winter21"
TREE_FILE = None  # the authors' imagenet21k_miil_tree.pth; None: the WordNet tree shipped with tresnet_nb
TOP_K = 5
THRESHOLD = 0.5  # a hierarchy level is reported when its top class is more probable than this
N_SAMPLES = 8
SENSES = ""  # your sense choices, comma-separated (the form is in the text above)"""
)

CELLS: list[tuple[str, str, list[str]]] = [
    (
        "markdown",
        f"""# 07 · ImageNet-21K heads: readable and hierarchical predictions, and head transplant

The authors' ImageNet-21K pretraining lifts TResNet-M from 80.7 to 83.1 top-1 on ImageNet-1K. Its 11,221-class head
(fall11, the released `*.miil_in21k` weights; winter21 has 10,450) is readable: each output is a WordNet synset
with lemmas and a definition, and the classes form a hierarchy. This notebook reads it, decodes it level by level
as the authors do, and then uses it for transfer: the classifier of a target dataset is **transplanted** from the
21K rows of its classes (a zero-shot classifier before any training, and a warm start for fine-tuning).

Headless: `python -m tresnet_nb run notebooks/{STEM}.ipynb -p DATASET cifar10 -p DATA_ROOT DIR`.""",
        [],
    ),
    ("markdown", "On Colab or Kaggle the next cell installs the package; anywhere else it does nothing.", []),
    ("code", SETUP_CELL, []),
    (
        "markdown",
        """## Parameters
Every value left at `None` is filled by the preset (`smoke`, `cpu` or `paper`); anything you set wins. `ARCH` needs
a 21K head: `tresnet_m.miil_in21k` or `tresnet_v2_l.miil_in21k` (or `WEIGHTS` = a checkpoint file with one).
`DATASET` is the transplant's target: `fashion_mnist` runs offline on the embedded images; `cifar10`, `cifar100`,
`flowers102`, `plant_pathology` and `folder` (your class folders) read `DATA_ROOT`. `SENSES` chooses WordNet senses
as comma-separated `name=synset` pairs, e.g. `"mouse=n03793489, tank=none"` (`none`: a random row).

(Comments in the parameters cell hold no `=`: papermill's parameter parser skips any line with two.)""",
        [],
    ),
    ("code", PARAMETERS, ["parameters"]),
    ("markdown", "## Configuration and environment", []),
    (
        "code",
        config_cell(
            STEM,
            imports="from tresnet_nb import heads21k\n",
            own=("LABEL_SET", "TREE_FILE", "TOP_K", "THRESHOLD", "SENSES"),
        ),
        [],
    ),
    (
        "markdown",
        """## The 21K model and its labels
The banner says whether the weights are pretrained: offline they are **random**, and every prediction below is then
meaningless (the cells still run, to show the path). The label set follows from the head's size; the hierarchy is
the authors' tree file when `TREE_FILE` is given, else the WordNet 3.0 tree shipped with the package.""",
        [],
    ),
    (
        "code",
        """model21k = heads21k.load_labelled_model(cfg.arch, cfg.weights, LABEL_SET)
tnb.weights_banner(tnb.weights_info(model21k))
labels = heads21k.label_set_for(model21k.num_classes)
hierarchy = heads21k.hierarchy_for(labels, TREE_FILE)
print(f"{labels.name}: {len(labels):,} classes; hierarchy: {hierarchy.source}, {len(hierarchy.levels())} levels")""",
        [],
    ),
    (
        "markdown",
        """## Readable and hierarchical predictions
Top classes of sample images with their synsets, lemmas and probabilities. The hierarchy column is the authors'
semantic softmax: the logits of each level get their own softmax, and a level's top class is kept when its
probability exceeds `THRESHOLD` (e.g. animal > dog > Samoyed).""",
        [],
    ),
    (
        "code",
        """ds = tnb.get_dataset(cfg.dataset).read(cfg.data_root)
images, names = heads21k.sample_images(ds, tnb.get_dataset(cfg.dataset).eval_split, N_SAMPLES)
predictions = heads21k.predict_images(model21k, images, TOP_K, hierarchy, cfg.img_size, THRESHOLD, names)
heads21k.show_predictions(predictions)
heads21k.plot_predictions(images, predictions, cfg.out / "predictions21k.png")""",
        [],
    ),
    (
        "markdown",
        """## How many classes of each dataset the 21K head knows
Each class name is matched to a 21K class by its lemmas and synonyms (case, plurals, separators, spelling slips):
*matched* classes get their own 21K row, *via ancestor* ones the row of a more general class (a head word such as
'lily', or the nearest ancestor in the label set), the rest a *random* row.""",
        [],
    ),
    ("code", """tnb.show(heads21k.coverage_table(extra={cfg.dataset: ds.class_names}))""", []),
    (
        "markdown",
        """## The sense chosen for each class of this run's dataset
Many names are ambiguous in the 21K set (a mouse is a rodent or a computer device). The sense kept fits the
dataset: its superclass where it has one (CIFAR-100), the branch where its other classes live, then WordNet's most
frequent sense. Every choice is listed with its synset and definition; override any with `SENSES`.""",
        [],
    ),
    (
        "code",
        """match = heads21k.match_names(ds.class_names, labels.name, cfg.dataset, SENSES)
tnb.show(match.table())
match.table().to_csv(cfg.out / "senses.csv", index=False)
print(match.coverage())""",
        [],
    ),
    (
        "markdown",
        """## Zero-shot, transplanted head + fine-tune, random head + fine-tune
The transplanted classifier is evaluated before any training, then fine-tuned; a copy of the same body with a random
head is fine-tuned for the same epochs. With random weights the table is printed but **not meaningful**.""",
        [],
    ),
    (
        "code",
        """data = tnb.open_data(cfg, model21k, tnb.device(), ds)
transplanted = heads21k.transplant_head(model21k, match)
arms = [heads21k.zero_shot(cfg, transplanted, data), heads21k.fine_tune(cfg, transplanted, data, "transplant")]
arms.append(heads21k.fine_tune(cfg, heads21k.new_head(model21k, len(ds.class_names)), data, "random_head"))
tnb.show(heads21k.comparison_table(arms, model21k))""",
        [],
    ),
    ("markdown", "## The zero-shot predictions, one by one\nA slider in JupyterLab, a table headless.", []),
    (
        "code",
        """browser = tnb.prediction_browser(data.valid_image, arms[0].evaluation.probs, arms[0].evaluation.targets,
                                 data.class_names, interactive=INTERACTIVE)""",
        [],
    ),
    (
        "markdown",
        """## Artifacts
`metrics.json` reports the transplant coverage of this run's dataset (matched or via an ancestor, as a fraction of
its classes) with the three starts' scores beside it, and whether the weights were pretrained.""",
        [],
    ),
    (
        "code",
        """record = heads21k.record(cfg, model21k, match, arms, hierarchy)
tnb.write_metrics(record, cfg.out / "metrics.json")
print(tnb.summary_line(record))""",
        [],
    ),
    (
        "markdown",
        """## Going further
- `python -m tresnet_nb predict photo.jpg --arch tresnet_m.miil_in21k --hierarchy` prints the same readable and
  hierarchical predictions from a terminal (`--tree imagenet21k_miil_tree.pth` uses the authors' tree file).
- `SENSES="television=n04405907"` keeps the television set rather than WordNet's first sense (broadcasting);
  `heads21k.match_names(your_names, "fall11", overrides={...})` does the same in code.
- The authors' tree file: `imagenet21k_miil_tree.pth` from the ImageNet-21K repository (Alibaba-MIIL); put it in
  `~/.cache/tresnet_nb/` and it is used for fall11 heads without `TREE_FILE`.""",
        [],
    ),
]


def main() -> int:
    return generate({STEM: notebook_json(STEM, CELLS)}, "tools/notebook07.py")


if __name__ == "__main__":
    sys.exit(main())
