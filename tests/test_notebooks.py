"""Notebooks: committed clean (no outputs, no defs, literal parameters) and executed under papermill."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import nbformat
import numpy as np
import pytest
from conftest import NOTEBOOKS
from IPython.core.inputtransformer2 import TransformerManager
from sklearn.metrics import accuracy_score

from tresnet_nb import load_model, load_preprocessing, weights_info
from tresnet_nb.hosted import SETUP_CELL
from tresnet_nb.report.record import PREDICTIONS, REQUIRED_KEYS
from tresnet_nb.runner import run_notebooks

CHECK_MARK = "# NBVAL_CHECK_OUTPUT"


def checked_outputs(nb) -> list[tuple[str, str]]:
    """(source, printed text) of each code cell marked NBVAL_CHECK_OUTPUT, as nbval --nbval-lax compares them."""
    return [
        (c.source, "".join(o.get("text", "") for o in c.outputs if o.get("name") == "stdout"))
        for c in nb.cells
        if c.cell_type == "code" and c.source.startswith(CHECK_MARK)
    ]


PARAMETERS = {
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
}


def test_there_are_notebooks():
    assert any(p.name == "00_quickstart.ipynb" for p in NOTEBOOKS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_clean(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1, "exactly one cell tagged 'parameters'"
    tree = ast.parse(params[0].source)
    names = set()
    for node in tree.body:
        assert isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant), ast.dump(node)[:80]
        names |= {t.id for t in node.targets}
    assert PARAMETERS <= names
    assert code[0].source == SETUP_CELL, "the first code cell is tresnet_nb.hosted.SETUP_CELL"
    for cell in code:
        assert cell.execution_count is None, "commit notebooks without execution counts"
        if cell.source.startswith(CHECK_MARK):  # a deterministic output, compared after each smoke run
            assert cell.outputs and all(o.output_type == "stream" for o in cell.outputs), "checked cells keep text"
        else:
            assert cell.outputs == [], "commit notebooks without outputs (except # NBVAL_CHECK_OUTPUT cells)"
        for node in ast.walk(ast.parse(TransformerManager().transform_cell(cell.source))):
            assert not isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)), (
                "logic goes in tresnet_nb"
            )
        if cell is not code[0]:  # installs happen in the setup cell only, and only on Colab/Kaggle
            assert "!pip" not in cell.source and "%pip" not in cell.source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_papermill_parses_every_parameter(path, caplog):
    import logging

    import papermill

    source = next(
        c.source for c in nbformat.read(path, as_version=4).cells if "parameters" in c.metadata.get("tags", [])
    )
    names = [t.id for node in ast.parse(source).body for t in node.targets]
    with caplog.at_level(logging.WARNING, logger="papermill"):
        parsed = papermill.inspect_notebook(str(path))
    assert [r.getMessage() for r in caplog.records if r.name.startswith("papermill")] == []
    assert list(parsed) == names  # every line understood, so -p NAME is accepted for each of them


@pytest.mark.slow
def test_quickstart_smoke_run(tmp_path, closed_hub, capsys):
    out = tmp_path / "runs"
    outcomes = run_notebooks(["notebooks/00_quickstart.ipynb"], out, preset="smoke")
    assert [o.status for o in outcomes] == ["ok"], outcomes[0].error
    printed = capsys.readouterr().out
    assert "00_quickstart epoch 1/1: train_loss" in printed  # live progress relayed from the kernel
    assert "00_quickstart: tresnet_m, weights=none (NOT pretrained: random init)" in printed
    run_dir = out / "00_quickstart"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(REQUIRED_KEYS) <= set(metrics)
    assert metrics["notebook"] == "00_quickstart" and metrics["preset"] == "smoke"
    assert metrics["pretrained"] is False and metrics["weights_source"] == "random"  # smoke: WEIGHTS 'none'
    assert metrics["metric_name"] == "accuracy" and metrics["fixture_data"] is False  # the embedded real subset
    saved = np.load(run_dir / PREDICTIONS)  # the metric is what the saved predictions give (scikit-learn's count)
    assert metrics["metric_value"] == pytest.approx(accuracy_score(saved["targets"], saved["probs"].argmax(1)))
    assert len(saved["targets"]) == metrics["n_eval"]
    assert metrics["img_size"] == 64 and metrics["epochs"] == 1 and metrics["train_seconds"] > 0
    assert set(metrics["versions"]) == {"torch", "timm", "fastai"}
    for name in (
        "00_quickstart.ipynb",
        "run_config.json",
        "samples.png",
        "class_counts.png",
        "training.png",
        "confusion.png",
        "predictions.png",
        "model.safetensors",
        "model.torchscript.pt",
        "model.torchscript.pt.json",
        "model.onnx",
        "model.onnx.json",
        "finished.json",
    ):
        assert (run_dir / name).is_file(), name
    # finished and its weights saved: the resumable checkpoint is gone, and the notebook said so with its size
    executed_text = (run_dir / "00_quickstart.ipynb").read_text()
    assert not (run_dir / "checkpoint.pth").exists() and "removed checkpoint.pth (" in executed_text
    from tresnet_nb.files import file_mode

    modes = {p.name: p.stat().st_mode & 0o777 for p in run_dir.iterdir() if p.is_file()}
    assert modes == dict.fromkeys(modes, file_mode()), modes  # what the umask gives new files (0o644 under 0o022)
    config = json.loads((run_dir / "run_config.json").read_text())
    assert config["output_dir"] == str(run_dir.resolve()) and config["max_items"] == 64
    committed = checked_outputs(nbformat.read("notebooks/00_quickstart.ipynb", as_version=4))
    executed = checked_outputs(nbformat.read(run_dir / "00_quickstart.ipynb", as_version=4))
    assert len(committed) == 2 and executed == committed  # the data layout and the model size, nbval-style
    assert load_preprocessing(run_dir / "model.onnx")["class_names"][0] == "T-shirt/top"
    reloaded = load_model(metrics["arch"], weights=run_dir / "model.safetensors")
    assert reloaded.num_classes == 10 and weights_info(reloaded).head == "pretrained"


@pytest.mark.slow
def test_quickstart_says_plainly_when_auto_weights_fall_back(tmp_path, closed_hub):
    out = tmp_path / "runs"
    outcomes = run_notebooks(["notebooks/00_quickstart.ipynb"], out, preset="smoke", params={"WEIGHTS": "auto"})
    assert [o.status for o in outcomes] == ["ok"], outcomes[0].error
    metrics = outcomes[0].metrics
    assert metrics["pretrained"] is False and metrics["weights"] == "auto" and metrics["weights_source"] == "random"
    executed = (out / "00_quickstart" / "00_quickstart.ipynb").read_text()
    assert "Weights: RANDOM initialisation" in executed


@pytest.mark.slow
def test_rerunning_the_notebook_flow_without_output_dir(tmp_path, monkeypatch, capsys):
    """The quickstart's cells in process, as a JupyterLab user re-runs them: a changed parameter starts its own run
    folder (said in one line), an unchanged configuration says it was complete and shows the same results; with an
    explicit OUTPUT_DIR holding another configuration, fit's clear error stands."""
    import torch
    from fastai.callback.progress import ProgressCallback

    import tresnet_nb as tnb

    monkeypatch.setattr("tresnet_nb.config.PROJECT_ROOT", tmp_path)  # no checkout here: runs/ goes under the cwd
    monkeypatch.chdir(tmp_path)

    def run_cells(output_dir=None, **params):
        cfg = tnb.RunConfig.from_params(
            "00_quickstart",
            preset="smoke",
            max_items=16,
            batch_size=8,
            precision="fp32",
            output_dir=output_dir,
            **params,
        )
        cfg.save()
        tnb.seed_everything(cfg.seed)
        splits = tnb.load_splits(cfg.dataset, cfg.data_root, cfg.max_items)
        model = tnb.load_model(cfg.arch, cfg.weights, num_classes=len(splits.class_names))
        dls = tnb.array_dls(
            splits, cfg.img_size, cfg.batch_size, tnb.data_config(model, cfg.img_size), torch.device("cpu")
        )
        learn = tnb.build_learner(cfg, dls, model)
        learn.remove_cb(ProgressCallback)
        result = tnb.fit(learn, cfg)
        probs, targets = tnb.predict(learn)
        evaluation = tnb.score(probs, targets, splits.class_names)
        return cfg, tnb.run_record(cfg, model, evaluation, result, learn), capsys.readouterr().out

    first, record1, said = run_cells()
    assert f"OUTPUT_DIR not set: this configuration's run folder is {first.out} (new" in said
    assert Path(first.output_dir).parent == tmp_path / "runs" / "00_quickstart" and record1["resumed_from"] is None
    second, record2, said = run_cells(seed=1)  # a changed parameter: no "different configuration" error
    assert second.output_dir != first.output_dir and (second.out / "checkpoint.pth").is_file()
    assert [line for line in said.splitlines() if "run folder" in line] == [
        f"OUTPUT_DIR not set: this configuration's run folder is {second.out} (new: each configuration has its own)"
    ]
    again, record3, said = run_cells()  # unchanged: says so, and shows the finished run's results
    assert again.output_dir == first.output_dir and "holds an earlier run of it" in said
    assert f"Training already complete in {first.out / 'checkpoint.pth'}" in said
    assert record3["resumed_from"] is not None and record3["metric_value"] == record1["metric_value"]
    with pytest.raises(ValueError, match="different configuration"):  # an explicit folder is the one given
        run_cells(output_dir=first.output_dir, seed=1)
