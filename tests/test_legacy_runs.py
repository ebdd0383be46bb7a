"""Runs written before the training options became TrainOptions (commit a837346: an ``extra`` dict in
run_config.json and in the checkpoint's fingerprint) keep loading, resuming and finding their folder.

tests/data/legacy_a837346 holds such a run, written by that commit (its make_legacy_run.py says how): a dataset
notebook's configuration training the tests' tiny net, stopped after the first of two epochs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from fastai.callback.progress import ProgressCallback
from helpers import CHECKPOINT, TinyNet

import tresnet_nb as tnb
from tresnet_nb import config as config_module
from tresnet_nb.options import TrainOptions

LEGACY = Path(__file__).parent / "data" / "legacy_a837346"


def _train(cfg: tnb.RunConfig) -> tuple[tnb.FitResult, dict[str, torch.Tensor]]:
    """The legacy run's path with today's API: the tiny net on the run's items, fitted in OUTPUT_DIR."""
    tnb.seed_everything(cfg.seed)
    model = TinyNet(10)
    splits = tnb.load_splits(cfg.dataset, None, cfg.max_items)
    dls = tnb.array_dls(splits, cfg.img_size, cfg.batch_size, tnb.data_config(model, cfg.img_size), torch.device("cpu"))
    learn = tnb.build_learner(cfg, dls, model)
    learn.remove_cb(ProgressCallback)
    result = tnb.fit(learn, cfg)
    return result, {k: v.detach().clone() for k, v in learn.model.state_dict().items()}


def test_an_old_run_config_loads_with_its_options_as_a_typed_object():
    raw = json.loads((LEGACY / "run_config.json").read_text())
    assert "extra" in raw and "options" not in raw  # as that commit wrote it
    cfg = tnb.RunConfig.load(LEGACY / "run_config.json")
    assert cfg.options == TrainOptions() and cfg.notebook_params == {}
    assert (cfg.notebook, cfg.dataset, cfg.img_size, cfg.epochs) == ("08_your_own_data", "fashion_mnist", 32, 2)


def test_an_old_checkpoint_resumes_and_ends_where_an_uninterrupted_run_does(tmp_path):
    broken = tmp_path / "legacy"
    shutil.copytree(LEGACY, broken)
    state = torch.load(broken / CHECKPOINT, map_location="cpu", weights_only=True)
    assert '"extra"' in state["fingerprint"] and state["epoch"] == 0  # the old fingerprint, after epoch 1
    cfg = tnb.RunConfig.load(broken / "run_config.json").with_changes(output_dir=str(broken))
    resumed, resumed_weights = _train(cfg)
    assert resumed.resumed_from is not None and "stage 1 epoch 1" in resumed.resumed_from
    whole, whole_weights = _train(cfg.with_changes(output_dir=str(tmp_path / "whole")))
    assert whole.resumed_from is None
    assert len(resumed.history["epochs"]) == len(whole.history["epochs"]) == 2
    for a, b in zip(resumed.history["epochs"], whole.history["epochs"], strict=True):
        assert a == pytest.approx(b, abs=1e-4)
    for key, value in whole_weights.items():
        if value.dtype.is_floating_point:
            torch.testing.assert_close(resumed_weights[key], value, rtol=1e-4, atol=1e-5)


def test_an_old_checkpoint_of_another_configuration_is_still_refused(tmp_path):
    broken = tmp_path / "legacy"
    shutil.copytree(LEGACY, broken)
    cfg = tnb.RunConfig.load(broken / "run_config.json").with_changes(output_dir=str(broken), mixup=0.2)
    with pytest.raises(ValueError, match="different configuration or plan"):
        _train(cfg)


def test_an_old_run_in_its_automatic_folder_is_found_again(tmp_path, monkeypatch):
    def runs_under_tmp(notebook: str, key: str | None = None) -> Path:
        return tmp_path / "runs" / notebook / key if key else tmp_path / "runs" / notebook

    monkeypatch.setattr(config_module, "default_output_dir", runs_under_tmp)
    raw = json.loads((LEGACY / "run_config.json").read_text())
    old_key = config_module.config_key(raw)  # the folder name that commit gave this configuration
    folder = tmp_path / "runs" / "08_your_own_data" / old_key
    shutil.copytree(LEGACY, folder)
    switches = dict(
        RECIPE=None,
        PROGRESSIVE=None,
        TTA=False,
        MIXUP=0.0,
        CUTMIX=0.0,
        ACCUMULATE=1,
        GRAD_CHECKPOINTING=False,
        BALANCED=False,
    )
    cfg = tnb.RunConfig.from_params(
        "08_your_own_data",
        preset="smoke",
        precision="fp32",
        img_size=32,
        batch_size=8,
        epochs=2,
        max_items=16,
        **switches,
    )
    assert cfg.key != old_key and cfg.out == folder and cfg.default_dir
    other = cfg.with_changes(epochs=3)
    assert other.out == tmp_path / "runs" / "08_your_own_data" / other.key  # another configuration: its own folder
