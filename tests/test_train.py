"""Training: CPU bf16 autocast really applies, channels_last, recipes, metrics on known inputs."""

from __future__ import annotations

import pytest
import torch
from fastai.callback.core import Callback
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
    seed_everything,
    topk_accuracy,
)
from tresnet_nb.callbacks import resolve_precision


class FrozenProbe(Callback):
    """Records, at the start of each fit, whether the body's first weight is frozen."""

    def __init__(self, seen: list) -> None:
        self.seen = seen

    def before_fit(self) -> None:
        self.seen.append(not next(self.learn.model.parameters()).requires_grad)


def tiny_learner(precision: str, tmp_path, recipe=None, epochs=1):
    cfg = RunConfig.from_params(
        "t", preset="smoke", precision=precision, max_items=32, epochs=epochs, output_dir=str(tmp_path)
    )
    seed_everything(cfg.seed)
    model = load_model(cfg.arch, cfg.weights, num_classes=10)
    splits = load_splits(cfg.dataset, None, cfg.max_items)
    dls = array_dls(splits, cfg.img_size, cfg.batch_size, data_config(model, cfg.img_size), torch.device("cpu"))
    learn = build_learner(cfg, dls, model, recipe=recipe)
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
    assert result.recipe == "scratch" and result.seconds > 0
    assert not torch.is_autocast_enabled("cpu")  # the context was closed after training
    probs, targets = predict(learn)
    assert probs.dtype == torch.float32 and probs.shape == (len(targets), 10)
    assert torch.allclose(probs.sum(1), torch.ones(len(targets)), atol=1e-3)
    summary = result.history
    assert len(summary["train_losses"]) == len(learn.dls.train) and summary["metric_names"][-1] == "accuracy"


def test_pretrained_bodies_are_fine_tuned_with_a_frozen_epoch_first(tmp_path):
    cfg, learn = tiny_learner("fp32", tmp_path, recipe="fastai")
    frozen = []
    learn.add_cb(FrozenProbe(frozen))
    result = fit(learn, cfg, pretrained=True)
    assert result.recipe == "fastai" and len(result.history["epochs"]) == 1 + cfg.epochs  # frozen epoch + epochs
    assert frozen == [True, False]  # the body had no trainable parameters in the first stage only
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


def test_asymmetric_loss_reduces_to_bce_and_down_weights_easy_negatives():
    from tresnet_nb.losses import AsymmetricLoss

    logits = torch.tensor([[2.0, -1.0, 0.5, -3.0], [-0.5, 1.5, -2.0, 0.0]])
    targets = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 1.0, 0.0, 0.0]])
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="sum") / 2
    assert AsymmetricLoss(0, 0, 0)(logits, targets) == pytest.approx(float(bce), rel=1e-5)
    asl = AsymmetricLoss()(logits, targets)
    assert 0 < asl < bce  # focusing and clipping only ever lower the negatives' share
    easy = torch.tensor([[-6.0]]), torch.tensor([[0.0]])
    assert AsymmetricLoss()(*easy) == 0  # p = 0.0025 < clip 0.05: an easy negative costs nothing


@pytest.mark.parametrize("loss", ["bce", "asl"])
def test_multi_label_training_on_the_plant_pathology_fixture(tmp_path, loss):
    from tresnet_nb.datasets import get_dataset
    from tresnet_nb.datasets.highres import prepare_file_dls

    spec = get_dataset("plant_pathology")
    ds = spec.read(spec.write_fixture(tmp_path / "pp"))
    cfg = RunConfig.from_params(
        "ml", preset="smoke", dataset="plant_pathology", precision="fp32", output_dir=str(tmp_path / "run")
    )
    seed_everything(cfg.seed)
    model = load_model(cfg.arch, cfg.weights, num_classes=len(ds.class_names))
    dls = prepare_file_dls(
        ds, "valid", 64, 8, data_config(model, 64), torch.device("cpu"), tmp_path / "run", cache_dir=tmp_path / "c"
    )
    learn = build_learner(cfg, dls, model, task="multi-label", multi_label_loss=loss)
    learn.remove_cb(ProgressCallback)
    result = fit(learn, cfg, pretrained=False)
    assert result.history["metric_names"] == ["train_loss", "valid_loss", "roc_auc", "mAP"]
    assert all(0.0 <= v <= 1.0 for v in result.history["epochs"][-1][2:4])
    probs, targets = predict(learn)
    from tresnet_nb.metrics import mean_average_precision, mean_column_auc

    # the per-epoch values are the metrics of the final validation predictions (no EMA in the scratch recipe)
    assert result.history["epochs"][-1][2] == pytest.approx(mean_column_auc(probs.numpy(), targets.numpy()), abs=1e-4)
    assert result.history["epochs"][-1][3] == pytest.approx(
        mean_average_precision(probs.numpy(), targets.numpy()), abs=1e-4
    )
    assert probs.shape == targets.shape == (len(ds["valid"]), 4)
    assert 0 <= probs.min() and probs.max() <= 1 and set(targets.unique().tolist()) <= {0.0, 1.0}
