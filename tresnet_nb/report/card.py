"""The model card (README.md) of a published run: what it was trained on and how, its score beside the paper's, what
it is for and not for, and how to load it. Built from the run's own record only, so it says nothing the run did not.
"""

from __future__ import annotations

from typing import Any

from ..config import RunConfig
from ..paper import transfer


def _value(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def _front_matter(record: dict[str, Any]) -> str:
    family = ["tresnet"] if str(record["arch"]).startswith("tresnet") else []
    tags = ["image-classification", "timm", *family, "tresnet-nb", f"dataset:{record['dataset']}"]
    return (
        "---\nlibrary_name: timm\npipeline_tag: image-classification\ntags:\n"
        + "".join(f"- {t}\n" for t in tags)
        + "---\n"
    )


def _scores(record: dict[str, Any]) -> str:
    paper = transfer(record["dataset"])
    rows = [
        "| | this model | paper (Ridnik et al., WACV 2021) |",
        "| --- | --- | --- |",
        f"| {record['metric_name']} | **{_value(record['metric_value'])}** | "
        f"{paper.text if paper.text != '-' else 'no result on this dataset'} |",
    ]
    for key in ("top1", "top5", "macro_f1", "mean_ap"):
        if record.get(key) is not None and key != record["metric_name"]:
            rows.append(f"| {key} | {_value(record[key])} | |")
    return "\n".join(rows)


def _recipe(cfg: RunConfig, record: dict[str, Any]) -> str:
    options = record.get("options") or {}
    lines = [
        f"- architecture: `{cfg.arch}` (timm), image size {record['img_size']} px",
        f"- weights before training: `{record['weights']}` "
        + ("(pretrained)" if record["pretrained"] else "(**random initialisation**: not pretrained)"),
        f"- recipe `{record.get('recipe', '-')}`, {record['epochs']} epoch{'' if record['epochs'] == 1 else 's'}, learning rate {record.get('lr', '-')}, "
        f"batch {cfg.batch_size}, precision {record.get('precision', '-')}, seed {cfg.seed}",
    ]
    if options:
        lines.append("- options: " + ", ".join(f"`{k}={v}`" for k, v in sorted(options.items())))
    if record.get("max_items"):
        lines.append(f"- at most {record['max_items']} training items (MAX_ITEMS: a reduced run)")
    lines.append(f"- trained in {record['train_seconds']:.0f} s on {record['device']}; versions {record['versions']}")
    return "\n".join(lines)


def card_texts(record: dict[str, Any], config: dict[str, Any], temperature: float | None) -> dict[str, str]:
    """The model card's sentences that depend on the run: the fixture warning, the calibration, the classes shown,
    what the model is, how it started, and what its inputs are."""
    pre = config["pretrained_cfg"]
    fixture = record.get("fixture_data")
    warning = (
        "\n> **Trained on generated fixture data** (the smoke preset): the scores below say nothing about the real "
        "dataset. Do not use this model for anything but testing the pipeline.\n"
        if fixture
        else ""
    )
    calibration = (
        f"Calibration: divide the logits by the temperature **{temperature:.4f}** (fitted on the evaluation split) "
        "before the softmax for calibrated probabilities; the published weights are the raw model."
        if temperature is not None
        else "Calibration: no temperature was fitted for this run; its softmax probabilities are uncalibrated."
    )
    names = config["label_names"]
    shown = ", ".join(names[:20]) + (f", ... ({len(names)} in all)" if len(names) > 20 else "")
    arch = config["architecture"]
    what = (
        "A TResNet image classifier (Ridnik et al., *TResNet: High Performance GPU-Dedicated Architecture*, WACV "
        "2021; timm's implementation)"
        if arch.startswith("tresnet")
        else f"A `{arch}` image classifier (timm's implementation)"
    )
    start = "fine-tuned" if record["pretrained"] else "trained from random initialisation"
    raw = all(m == 0 for m in pre["mean"]) and all(s == 1 for s in pre["std"])
    pixels = (
        f"RGB pixels in [0, 1] (mean {pre['mean']}, std {pre['std']}: {arch} takes raw pixels)"
        if raw
        else f"RGB pixels in [0, 1] normalised with mean {pre['mean']} and std {pre['std']}"
    )
    return {
        "warning": warning,
        "calibration": calibration,
        "shown": shown,
        "what": what,
        "start": start,
        "pixels": pixels,
    }


def model_card(cfg: RunConfig, record: dict[str, Any], config: dict[str, Any], temperature: float | None) -> str:
    """The README.md of a published run: ``record`` is its metrics.json, ``config`` the config.json written beside
    it, ``temperature`` the calibration temperature saved with the run (None if it has none)."""
    t = card_texts(record, config, temperature)
    pre, names = config["pretrained_cfg"], config["label_names"]
    return f"""{_front_matter(record)}
# {cfg.arch} {t["start"]} on {record["dataset"]} ({record["notebook"]})
{t["warning"]}
{t["what"]} trained with [tresnet-nb](https://github.com/tresnet-nb/tresnet-nb). Its score on the dataset's
evaluation split is **{record["metric_name"]} = {_value(record["metric_value"])}** ({record.get("n_eval", "?")} images).

## Scores

{_scores(record)}

## Training

- dataset: `{record["dataset"]}` ({len(names)} classes: {t["shown"]})
{_recipe(cfg, record)}

{t["calibration"]}

## Preprocessing

{t["pixels"]}, the whole image resized to {pre["input_size"][1]} x {pre["input_size"][2]} with {pre["interpolation"]}
interpolation and no crop (timm's `crop_mode="{pre["crop_mode"]}"`, `crop_pct={pre["crop_pct"]}`), as in training.
`timm.data.resolve_data_config(model=model)` and `timm.data.create_transform(**config)` rebuild it from `config.json`.

## How to load it

With timm alone:

```python
import timm

model = timm.create_model("local-dir:PATH/TO/THIS/FOLDER", pretrained=True).eval()  # or "hf-hub:USER/REPO"
transform = timm.data.create_transform(**timm.data.resolve_data_config(model=model))
```

With tresnet-nb (class names, preprocessing and calibration included):

```python
import tresnet_nb as tnb

run = tnb.load_run("PATH/TO/THIS/FOLDER")  # or "hf-hub:USER/REPO"
predictions = run.predict(["image.jpg"])  # file, label, probability, then the top 5
```

or from the command line: `python -m tresnet_nb predict --model PATH/TO/THIS/FOLDER IMAGES_OR_FOLDERS --csv out.csv`.

## Intended use and limitations

Intended for classifying images like those of `{record["dataset"]}` into its {len(names)} classes, and as a starting
point for further fine-tuning. It has seen only that dataset's training split: images from another source (camera,
resolution, framing) or of other classes get confident but meaningless answers, since the softmax always picks one
of the classes above. The score above is on one evaluation split{" of " + str(record["n_eval"]) + " images" if record.get("n_eval") else ""};
check it on your own data before relying on it, and do not use it for decisions about people.
"""
