"""The training engine's switches: augmentation policies, MixUp/CutMix, gradient accumulation and clipping,
gradient checkpointing, torch.compile, the learning-rate finder, test-time augmentation, progressive resizing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fastai.callback.core import Callback
from fastai.callback.progress import ProgressCallback
from sklearn.metrics import average_precision_score
from torch import nn

from tresnet_nb import (
    RECIPES,
    Phase,
    RunConfig,
    array_dls,
    build_learner,
    data_config,
    fit,
    load_model,
    load_splits,
    lr_find,
    parse_phases,
    predict,
    seed_everything,
)
from tresnet_nb.data.arrays import ArraySplits, Preprocess
from tresnet_nb.data.augment import BatchAugment, check_augment
from tresnet_nb.evaluation.metrics import mean_average_precision
from tresnet_nb.train.fit import plan_stages as plan
from tresnet_nb.train.mix import MixupCutmix

CPU = torch.device("cpu")


def preprocess(dl) -> Preprocess:
    (step,) = [t for t in getattr(dl.after_batch, "fs", [dl.after_batch]) if isinstance(t, Preprocess)]
    return step


def make(
    tmp_path, max_items=32, batch_size=16, img_size=64, model=None, splits=None, dataset="fashion_mnist", **options
):
    cfg = RunConfig.from_params(
        "e",
        preset="smoke",
        precision="fp32",
        max_items=max_items,
        batch_size=batch_size,
        img_size=img_size,
        output_dir=str(tmp_path),
        dataset=dataset,
        **options,
    )
    seed_everything(cfg.seed)
    model = model if model is not None else load_model(cfg.arch, cfg.weights, num_classes=10)
    splits = splits if splits is not None else load_splits(cfg.dataset, None, cfg.max_items)
    dls = array_dls(splits, cfg.img_size, cfg.batch_size, data_config(model, cfg.img_size), CPU)
    learn = build_learner(cfg, dls, model)
    learn.remove_cb(ProgressCallback)
    return cfg, learn


class Tiny(nn.Module):
    """A small convnet without BatchNorm (so that batch composition cannot change the gradients)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(4, 10)

    def get_classifier(self) -> nn.Module:
        return self.fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x))


class Record(Callback):
    """Keeps what a hook saw, at a chosen callback order."""

    def __init__(self, order: int, event: str, fn) -> None:
        self.order, self.seen = order, []
        setattr(self, event, lambda: self.seen.append(fn(self)))


# ---- augmentation policies -------------------------------------------------------------------------------------


def test_recipes_set_their_policy_on_the_training_loader_only(tmp_path):
    _, learn = make(tmp_path, recipe="miil")
    train_pre, valid_pre = preprocess(learn.dls.train), preprocess(learn.dls.valid)
    assert (train_pre.aug.policy, train_pre.aug.erasing) == (RECIPES["miil"].augment, 0.5) == ("autoaugment", 0.5)
    assert valid_pre.aug is None
    _, learn = make(tmp_path, recipe="scratch", augment="randaugment", erasing=0.25)
    train_pre = preprocess(learn.dls.train)
    assert (train_pre.aug.policy, train_pre.aug.erasing) == ("randaugment", 0.25)
    assert learn.plan.settings()["augment"] == "randaugment"


@pytest.mark.parametrize(
    ("dataset", "augment", "flips"),
    [
        ("fashion_mnist", None, True),  # clothes keep their class in a mirror: the recipe's flips
        ("folder", None, False),  # a user's own images may not (digits, letters): no flips by default
        ("csv", None, False),
        ("folder", "flip", True),  # a policy asked for by name flips
    ],
)
def test_the_recipes_flip_only_datasets_whose_classes_survive_a_mirror(tmp_path, dataset, augment, flips):
    splits = load_splits("fashion_mnist", None, 32)  # the images do not matter; the dataset's entry does
    _, learn = make(tmp_path, model=Tiny(), splits=splits, dataset=dataset, recipe="fastai", augment=augment)
    aug = preprocess(learn.dls.train).aug
    assert (aug.policy, aug.flip, learn.plan.settings()["flip"]) == ("flip", flips, flips)
    x = torch.rand(64, 3, 8, 8)
    torch.manual_seed(0)
    mirrored = [torch.equal(a, b.flip(2)) for a, b in zip(aug.images(x.clone()), x, strict=True)]
    assert (20 <= sum(mirrored) <= 44) if flips else not any(mirrored)  # binomial(64, 0.5): mean 32, sd 4


@pytest.mark.parametrize(("augment", "policy"), [(None, "none"), ("flip", "flip")])
def test_the_scratch_recipe_augments_nothing_unless_asked(tmp_path, augment, policy):
    # measured (docs/benchmarks.md, bench_vs_fastai.py): two epochs from scratch fit better without flips, even on clothes
    splits = load_splits("fashion_mnist", None, 32)
    _, learn = make(tmp_path, model=Tiny(), splits=splits, dataset="fashion_mnist", recipe="scratch", augment=augment)
    aug = preprocess(learn.dls.train).aug
    assert (aug.policy, aug.flip, learn.plan.settings()["augment"], learn.plan.settings()["flip"]) == (
        policy,
        augment == "flip",
        policy,
        augment == "flip",
    )
    x = torch.rand(16, 3, 8, 8)
    torch.manual_seed(0)  # with flips, all 16 left alone has probability 2**-16
    assert torch.equal(aug.images(x.clone()), x) == (augment is None)


@pytest.mark.parametrize("policy", ["autoaugment", "randaugment"])
def test_policies_without_flips_never_mirror(policy):
    x = torch.rand(32, 3, 32, 32)
    x[:, :, :, :16] = 0  # the left half dark: a mirror puts the dark half on the right
    torch.manual_seed(0)
    out = BatchAugment(policy, flip=False).images(x.clone())
    left, right = out[..., :16].mean((1, 2, 3)), out[..., 16:].mean((1, 2, 3))
    assert not (left > right).any()
    torch.manual_seed(0)
    flipped = BatchAugment(policy).images(x.clone())
    assert (flipped[..., :16].mean((1, 2, 3)) > flipped[..., 16:].mean((1, 2, 3))).any()  # the check can fail


@pytest.mark.parametrize("policy", ["autoaugment", "randaugment"])
def test_policies_change_images_per_image_and_repeat_under_a_seed(policy):
    x = torch.rand(8, 3, 32, 32)
    torch.manual_seed(0)
    a = BatchAugment(policy).images(x.clone())
    torch.manual_seed(0)
    b = BatchAugment(policy).images(x.clone())
    assert torch.equal(a, b)
    assert a.shape == x.shape and 0 <= a.min() and a.max() <= 1
    changed = [(a[i] - x[i]).abs().max() > 2 / 255 for i in range(8)]  # beyond the uint8 round trip
    assert sum(changed) >= 4


def test_random_erasing_fills_one_rectangle_with_noise_at_its_probability():
    x = torch.zeros(64, 3, 32, 32)
    torch.manual_seed(0)
    out = BatchAugment("none", erasing=1.0).erase(x)
    for img in out:
        rows, cols = torch.nonzero(img.abs().sum(0)).unbind(1)
        assert len(rows) > 0
        box = img[:, rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        assert (box != 0).all()  # a full rectangle of noise
        area = box.shape[1] * box.shape[2] / (32 * 32)
        assert 0.02 - 0.01 <= area <= 1 / 3 + 0.05
    torch.manual_seed(0)
    half = BatchAugment("none", erasing=0.5).erase(x)
    erased = int((half.flatten(1).abs().sum(1) > 0).sum())
    assert 20 <= erased <= 44  # binomial(64, 0.5): mean 32, sd 4
    assert torch.equal(BatchAugment("none", erasing=0.0).erase(x), x)


@pytest.mark.parametrize(("policy", "erasing"), [("cutout", 0.0), ("flip", 1.5), ("flip", True)])
def test_bad_augmentation_values_are_named(policy, erasing):
    with pytest.raises(ValueError, match=repr(policy) if policy == "cutout" else "erasing"):
        check_augment(policy, erasing)


# ---- MixUp / CutMix --------------------------------------------------------------------------------------------


def _mix_probe(learn):
    mix = next(cb for cb in learn.cbs if isinstance(cb, MixupCutmix))
    before = Record(19, "before_batch", lambda cb: (cb.xb[0].clone(), cb.yb[0].clone()))
    after = Record(
        21,
        "before_batch",
        lambda cb: (cb.xb[0].clone(), cb.yb[0].clone(), float(mix.lam), mix.yb1[0].clone(), mix.shuffle.clone()),
    )
    before.run_valid = after.run_valid = False  # MixUp/CutMix leave validation batches alone
    learn.add_cbs([before, after])
    with learn.no_logging():
        learn.fit(1, 1e-4)
    return before.seen, after.seen


def test_mixup_blends_each_batch_with_a_shuffled_copy(tmp_path):
    _, learn = make(tmp_path, mixup=0.4)
    before, after = _mix_probe(learn)
    assert len(before) == len(after) == 2
    for (x, y), (mixed, y_after, lam, y1, shuffle) in zip(before, after, strict=True):
        assert 0 < lam < 1 and sorted(shuffle.tolist()) == list(range(len(y)))
        torch.testing.assert_close(mixed, lam * x + (1 - lam) * x[shuffle])
        assert torch.equal(y_after, y) and torch.equal(y1, y[shuffle])  # single-label: the loss is mixed


def test_cutmix_pastes_one_rectangle_and_weights_by_its_area(tmp_path):
    _, learn = make(tmp_path, cutmix=1.0)
    mix = next(cb for cb in learn.cbs if isinstance(cb, MixupCutmix))
    boxes = Record(21, "before_batch", lambda cb: mix.box)
    boxes.run_valid = False
    learn.add_cb(boxes)
    before, after = _mix_probe(learn)
    assert len(boxes.seen) == len(before) == 2
    for (x, _), (mixed, _, lam, _, shuffle), (y1, y2, x1, x2) in zip(before, after, boxes.seen, strict=True):
        h, w = x.shape[-2:]
        assert lam == pytest.approx(1 - (y2 - y1) * (x2 - x1) / (h * w))
        inside = torch.zeros(h, w, dtype=torch.bool)
        inside[y1:y2, x1:x2] = True
        assert torch.equal(mixed[..., inside], x[shuffle][..., inside])
        assert torch.equal(mixed[..., ~inside], x[..., ~inside])


def test_mixup_mixes_multi_label_targets():
    cb = MixupCutmix(mixup=0.4)
    x, y = torch.rand(4, 3, 8, 8), torch.tensor([[1.0, 0], [0, 1], [1, 1], [0, 0]])

    class Fake:
        xb, yb, loss_func = (x,), (y,), nn.BCEWithLogitsLoss()

    cb.learn = Fake()
    cb.before_train()
    cb.before_batch()
    lam, y1 = float(cb.lam), cb.yb1[0]
    assert torch.allclose(cb.learn.yb[0], lam * y + (1 - lam) * y1)
    assert not torch.equal(cb.learn.yb[0], y)


def test_mixup_values_are_checked():
    with pytest.raises(ValueError, match="MIXUP must be a Beta alpha"):
        MixupCutmix(mixup=-1)
    with pytest.raises(ValueError, match="needs MIXUP > 0 or CUTMIX > 0"):
        MixupCutmix()


# ---- gradient accumulation and clipping ------------------------------------------------------------------------


def _tiny_splits(n: int = 16) -> ArraySplits:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (n, 32, 32), dtype=np.uint8)
    return ArraySplits(x, np.arange(n) % 10, x[:10], np.arange(10), tuple(str(i) for i in range(10)))


def test_accumulating_two_half_batches_equals_one_full_batch(tmp_path):
    grads = []
    for bs, accumulate in ((16, 1), (8, 2)):
        torch.manual_seed(0)
        _, learn = make(
            tmp_path,
            batch_size=bs,
            img_size=32,
            model=Tiny(),
            splits=_tiny_splits(),
            augment="none",
            accumulate=accumulate,
        )
        # the gradient the optimizer steps with (order 7: after AccumulateGradients lets the step happen)
        steps = Record(7, "before_step", lambda cb: [p.grad.clone() for p in cb.learn.model.parameters()])
        learn.add_cb(steps)
        with learn.no_logging():
            learn.fit(1, 1e-2)
        assert len(steps.seen) == 1
        grads.append(steps.seen[0])
    for full, accumulated in zip(*grads, strict=True):
        torch.testing.assert_close(accumulated, full, rtol=1e-4, atol=1e-7)


def test_accumulation_steps_on_the_last_batch_of_an_epoch(tmp_path):
    _, learn = make(
        tmp_path,
        max_items=48,
        batch_size=16,
        img_size=32,
        model=Tiny(),
        splits=_tiny_splits(48),
        augment="none",
        accumulate=2,
    )
    steps = Record(50, "after_step", lambda cb: cb.iter)
    learn.add_cb(steps)
    with learn.no_logging():
        learn.fit(2, 1e-2)
    assert steps.seen == [1, 2, 1, 2]  # 3 batches an epoch: after the 2nd, then the last; no carry-over
    with pytest.raises(ValueError, match="ACCUMULATE must be a whole number"):
        make(tmp_path, img_size=32, model=Tiny(), splits=_tiny_splits(), accumulate=0)


def test_gradient_clipping_bounds_the_norm_the_optimizer_sees(tmp_path):
    def norm(cb):
        return float(
            torch.linalg.vector_norm(
                torch.stack([p.grad.norm() for p in cb.learn.model.parameters() if p.grad is not None])
            )
        )

    seen = {}
    for clip in (None, 1e-3):
        _, learn = make(tmp_path, img_size=32, model=Tiny(), splits=_tiny_splits(), augment="none", clip_grad=clip)
        probe = Record(12, "before_step", norm)  # after GradientClip (order 11)
        learn.add_cb(probe)
        with learn.no_logging():
            learn.fit(1, 1e-3)
        seen[clip] = probe.seen
    assert min(seen[None]) > 1e-2
    assert max(seen[1e-3]) <= 1e-3 * (1 + 1e-4)
    with pytest.raises(ValueError, match="CLIP_GRAD must be a positive"):
        make(tmp_path, img_size=32, model=Tiny(), splits=_tiny_splits(), clip_grad=0)


# ---- memory and speed switches ---------------------------------------------------------------------------------


@pytest.mark.parametrize("switch", [{"grad_checkpointing": True}, {"compile": "eager"}])
def test_gradient_checkpointing_and_compile_switches_train(tmp_path, switch):
    cfg, learn = make(tmp_path, **switch)
    if "compile" in switch:
        assert learn.model._compiled_call_impl is not None  # nn.Module.compile: in place
    else:
        assert learn.model.grad_checkpointing
    assert not any(k.startswith("_orig_mod") for k in learn.model.state_dict())
    result = fit(learn, cfg)
    assert len(result.history["epochs"]) == 1 and np.isfinite(result.history["train_losses"]).all()


def test_checkpointing_needs_a_timm_model_and_no_compile(tmp_path):
    with pytest.raises(TypeError, match="set_grad_checkpointing"):
        make(tmp_path, img_size=32, model=Tiny(), splits=_tiny_splits(), grad_checkpointing=True)
    with pytest.raises(ValueError, match="cannot be combined"):
        make(tmp_path, grad_checkpointing=True, compile=True)


# ---- learning-rate finder and test-time augmentation -----------------------------------------------------------


def test_lr_find_leaves_weights_and_optimizer_as_they_were(tmp_path):
    _, learn = make(tmp_path, recipe="miil")
    before = {k: v.clone() for k, v in learn.model.state_dict().items()}
    found = lr_find(learn, num_it=8)
    assert len(found.lrs) == len(found.losses) >= 6
    assert all(a < b for a, b in zip(found.lrs, found.lrs[1:], strict=False))
    assert found.lrs[0] <= found.suggestion <= found.lrs[-1]
    for key, value in learn.model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert not list((tmp_path / "models").glob("*/_tmp.pth"))  # fastai's temporary copy is removed


def test_tta_averages_the_predictions_on_flipped_images(tmp_path):
    cfg, learn = make(tmp_path)
    fit(learn, cfg)
    plain, targets = predict(learn)
    averaged, targets2 = predict(learn, tta=True)
    splits = load_splits(cfg.dataset, None, cfg.max_items)
    flipped_splits = ArraySplits(
        splits.train_x,
        splits.train_y,
        np.ascontiguousarray(splits.valid_x[:, :, ::-1]),
        splits.valid_y,
        splits.class_names,
    )
    flipped_dls = array_dls(flipped_splits, cfg.img_size, cfg.batch_size, data_config(learn.model, cfg.img_size), CPU)
    on_flipped, _ = predict(learn, dl=flipped_dls.valid)
    assert torch.equal(targets, targets2)
    torch.testing.assert_close(averaged, (plain + on_flipped) / 2, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(averaged, plain, atol=1e-4)


def test_mean_average_precision_matches_scikit_learn():
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 2, (50, 4))
    probs = np.clip(targets * 0.3 + rng.random((50, 4)), 0, 1)
    expected = np.mean([average_precision_score(targets[:, j], probs[:, j]) for j in range(4)])
    assert mean_average_precision(probs, targets) == pytest.approx(expected, abs=1e-12)
    assert mean_average_precision(targets.astype(float), targets) == 1.0


# ---- progressive resizing --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "32:1:8,64:2:16",
        "32:1:8 64:2:16",
        [[32, 1, 8], [64, 2, 16]],
        [{"size": 32, "epochs": 1, "batch_size": 8}, (64, 2, 16)],
    ],
)
def test_progressive_schedules_parse(value):
    assert parse_phases(value) == (Phase(32, 1, 8), Phase(64, 2, 16))


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("224x3", "not understood"),
        ([[224, 3]], "needs one or more"),
        ([[225, 1, 8]], "225"),
        ([[224, 0, 8]], "at least 1 epoch"),
        ([[224, 1.5, 8]], "integers"),
    ],
)
def test_bad_progressive_schedules_are_refused(value, match):
    with pytest.raises(ValueError, match=match):
        parse_phases(value)


def test_progressive_plan_scales_the_rate_with_the_batch_and_keeps_one_frozen_stage():
    phases = parse_phases("224:2:64,448:1:16")
    stages = plan(RECIPES["fastai"], 99, 2e-3, True, phases)
    assert [(s.frozen, s.epochs, s.size, s.batch_size) for s in stages] == [
        (True, 1, 224, 64),
        (False, 2, 224, 64),
        (False, 1, 448, 16),
    ]
    assert stages[1].lr == pytest.approx((1e-5, 1e-3)) and stages[2].lr == pytest.approx((2.5e-6, 2.5e-4))
    scratch = plan(RECIPES["scratch"], 99, None, False, phases)
    assert [s.lr for s in scratch] == pytest.approx([3e-3, 7.5e-4])


def test_progressive_fit_swaps_loaders_and_keeps_the_optimizer_state(tmp_path):
    cfg, learn = make(tmp_path, recipe="miil")
    splits = load_splits(cfg.dataset, None, cfg.max_items)
    built = []

    def dls_for(size: int, bs: int):
        built.append((size, bs))
        return array_dls(splits, size, bs, data_config(learn.model, size), CPU)

    sizes = Record(50, "before_batch", lambda cb: (cb.epoch, cb.training, tuple(cb.xb[0].shape)))
    steps = Record(50, "after_step", lambda cb: 1)
    learn.add_cbs([sizes, steps])
    result = fit(learn, cfg.with_changes(progressive="32:1:8,64:1:16"), dls_for=dls_for)
    assert built == [(32, 8), (64, 16)]
    assert preprocess(learn.dls.train).aug.policy == "autoaugment"  # the recipe's augmentation carried over
    train_shapes = {(epoch, shape) for epoch, training, shape in sizes.seen if training}
    assert train_shapes == {(0, (8, 3, 32, 32)), (0, (16, 3, 64, 64))}  # each phase is one fit of one epoch
    assert result.epochs == 2 and len(result.history["epochs"]) == 2
    # 32 items: 4 batches of 8, then 2 of 16; Adam's state carried over, so its step counter covers both phases
    assert len(steps.seen) == 6
    assert {int(s["step"]) for s in learn.opt.state.values() if "step" in s} == {6}
    with pytest.raises(ValueError, match="needs dls_for"):
        fit(learn, cfg.with_changes(progressive="32:1:8"))


# ---- the miil recipe's parts -----------------------------------------------------------------------------------


def test_miil_recipe_optimizer_loss_and_schedule(tmp_path):
    cfg, learn = make(tmp_path, img_size=32, model=Tiny(), splits=_tiny_splits(32), batch_size=8, recipe="miil")
    miil = RECIPES["miil"]
    assert learn.loss_func.func.label_smoothing == miil.label_smoothing == 0.1
    lrs = Record(50, "before_step", lambda cb: cb.opt.hypers[-1]["lr"])
    learn.add_cb(lrs)
    fit(learn, cfg.with_changes(epochs=5))
    # weight decay 1e-4 as L2 (not decoupled), on weights but not on biases (nor norm weights)
    hypers = learn.opt.hypers[-1]
    assert hypers["wd"] == pytest.approx(1e-4)
    decays = {p.ndim: learn.opt.state[p].get("do_wd", True) for p in learn.model.parameters()}
    assert decays == {4: True, 2: True, 1: False}
    # linear warm-up over the first 6% from lr/25, then cosine down to zero
    seen = np.array(lrs.seen)
    peak = int(np.argmax(seen))
    assert seen[0] == pytest.approx(miil.lr / 25, rel=0.2) and seen.max() == pytest.approx(miil.lr, rel=0.05)
    assert 0 < peak <= 0.1 * len(seen) and np.all(np.diff(seen[peak:]) <= 1e-12) and seen[-1] < 0.05 * miil.lr


def test_ema_is_the_running_average_that_is_validated_and_kept(tmp_path):
    cfg, learn = make(tmp_path, img_size=32, model=Tiny(), splits=_tiny_splits(32), batch_size=8, recipe="miil")
    decay = RECIPES["miil"].ema_decay
    start = {k: v.clone() for k, v in learn.model.state_dict().items()}
    live = Record(54, "after_step", lambda cb: {k: v.clone() for k, v in cb.learn.model.state_dict().items()})
    learn.add_cb(live)
    result = fit(learn, cfg.with_changes(epochs=2))
    expected = start
    for weights in live.seen:
        expected = {k: expected[k] + (1 - decay) * (weights[k] - expected[k]) for k in expected}
    for key, value in learn.model.state_dict().items():  # the model holds the average at the end
        torch.testing.assert_close(value, expected[key], rtol=1e-5, atol=1e-7)
    recorded_valid_loss = result.history["epochs"][-1][1]
    assert learn.validate()[0] == pytest.approx(recorded_valid_loss, abs=1e-6)  # validation ran on the average
    learn.model.load_state_dict(live.seen[-1])
    with learn.removed_cbs([cb for cb in learn.cbs if type(cb).__name__ == "EMA"]):
        assert learn.validate()[0] != pytest.approx(recorded_valid_loss, abs=1e-6)
