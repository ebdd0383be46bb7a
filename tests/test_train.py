"""Training: CPU bf16 autocast really applies, channels_last, recipes, metrics on known inputs."""

from __future__ import annotations

import pytest
import torch
from fastai.callback.progress import ProgressCallback

from tresnet_nb import (
    RunConfig,
    array_dls,
    build_learner,
    classify_report,
    data_config,
    fit,
    load_model,
    load_splits,
    predict,
    topk_accuracy,
)
from tresnet_nb.train import resolve_precision


def tiny_learner(precision: str, tmp_path):
    cfg = RunConfig.from_params("t", preset="smoke", precision=precision, max_items=32, output_dir=str(tmp_path))
    model = load_model(cfg.arch, cfg.weights, num_classes=10)
    splits = load_splits(cfg.dataset, None, cfg.max_items)
    dls = array_dls(splits, cfg.img_size, cfg.batch_size, data_config(model, cfg.img_size), torch.device("cpu"))
    learn = build_learner(cfg, dls, model)
    learn.remove_cb(ProgressCallback)
    return cfg, learn


@pytest.mark.parametrize(
    ("precision", "dtype"), [("bf16", torch.bfloat16), ("fp32", torch.float32), ("auto", torch.bfloat16)]
)
def test_precision_is_what_the_convolutions_compute_in(tmp_path, precision, dtype):
    cfg, learn = tiny_learner(precision, tmp_path)
    seen: list[tuple[torch.dtype, bool]] = []
    conv = learn.model.body.layer1[0].conv1.conv
    hook = conv.register_forward_hook(
        lambda m, i, o: seen.append((o.dtype, i[0].is_contiguous(memory_format=torch.channels_last)))
    )
    result = fit(learn, cfg, pretrained=False)
    hook.remove()
    assert seen and all(d == dtype for d, _ in seen)
    assert all(cl for _, cl in seen)  # channels_last inputs all the way down
    assert result.recipe == "fit_one_cycle" and result.seconds > 0
    assert not torch.is_autocast_enabled("cpu")  # the context was closed after training
    probs, targets = predict(learn)
    assert probs.dtype == torch.float32 and probs.shape == (len(targets), 10)
    assert torch.allclose(probs.sum(1), torch.ones(len(targets)), atol=1e-3)
    summary = result.history
    assert len(summary["train_losses"]) == len(learn.dls.train) and summary["metric_names"][-1] == "accuracy"


def test_pretrained_bodies_are_fine_tuned_with_a_frozen_epoch_first(tmp_path):
    cfg, learn = tiny_learner("fp32", tmp_path)
    result = fit(learn, cfg, pretrained=True)
    assert result.recipe == "fine_tune" and len(learn.recorder.values) == cfg.epochs  # frozen epoch + epochs
    assert len(learn.opt.param_groups) == 2  # body and head groups from head_splitter


def test_fp16_on_cpu_is_refused():
    with pytest.raises(ValueError, match="PRECISION 'fp16' needs a CUDA device"):
        resolve_precision("fp16", torch.device("cpu"))


def test_classify_report_on_known_predictions():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.6, 0.3, 0.1], [0.2, 0.2, 0.6]])
    targets = torch.tensor([0, 1, 1, 2])
    report = classify_report(probs, targets, ["a", "b", "c"])
    assert report.top1 == pytest.approx(0.75) and report.top5 is None
    assert report.confusion.tolist() == [[1, 0, 0], [1, 1, 0], [0, 0, 1]]
    assert report.per_class["accuracy"].tolist() == pytest.approx([1.0, 0.5, 1.0])
    assert report.macro_f1 == pytest.approx((2 / 3 + 2 / 3 + 1.0) / 3)
    assert topk_accuracy(probs, targets, 2) == 1.0
    with pytest.raises(ValueError, match="do not fit 4 classes"):
        classify_report(probs, targets, ["a", "b", "c", "d"])
