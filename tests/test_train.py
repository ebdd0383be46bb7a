"""Training: CPU bf16 autocast really applies, channels_last, recipes, metrics on known inputs."""

from __future__ import annotations

import pytest
import torch
from fastai.callback.core import Callback
from fastai.callback.fp16 import MixedPrecision
from fastai.callback.progress import ProgressCallback
from fastai.torch_core import norm_bias_params
from fastcore.foundation import L
from helpers import CHECKPOINT, Interrupt, InterruptAt, TinyNet, make_learner

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
    runtime,
    seed_everything,
    topk_accuracy,
)
from tresnet_nb.runtime import cpu_has_native_bf16
from tresnet_nb.train.callbacks import EpochLog, resolve_precision


class GroupProbe(Callback):
    """Per fit: which tensors of each parameter group train (requires_grad), and each group's learning rate and
    momentum at every optimizer step (after the schedulers have set them)."""

    def __init__(self) -> None:
        self.fits: list[dict] = []

    def before_fit(self) -> None:
        trains = [[p.requires_grad for p in group] for group in self.learn.opt.param_lists]
        self.fits.append({"trains": trains, "lr": [], "mom": []})

    def before_step(self) -> None:
        for key in ("lr", "mom"):
            self.fits[-1][key].append([float(h[key]) for h in self.learn.opt.hypers])


def tiny_learner(precision: str, tmp_path, recipe=None, epochs=1):
    # TResNet-M at 32 px on 16 items: the dtypes and memory format under test do not depend on the size, and bf16 is
    # emulated (slow) on a CPU without native bf16
    cfg = RunConfig.from_params(
        "t",
        preset="smoke",
        precision=precision,
        max_items=16,
        img_size=32,
        epochs=epochs,
        output_dir=str(tmp_path),
        recipe=recipe,
    )
    seed_everything(cfg.seed)
    model = load_model(cfg.arch, cfg.weights, num_classes=10)
    splits = load_splits(cfg.dataset, None, cfg.max_items)
    dls = array_dls(splits, cfg.img_size, cfg.batch_size, data_config(model, cfg.img_size), torch.device("cpu"))
    learn = build_learner(cfg, dls, model)
    learn.remove_cb(ProgressCallback)
    return cfg, learn


@pytest.mark.parametrize(
    ("precision", "dtype"),
    [
        ("bf16", torch.bfloat16),
        ("fp32", torch.float32),
        ("auto", torch.bfloat16 if cpu_has_native_bf16() else torch.float32),
    ],
)
def test_precision_is_what_the_convolutions_compute_in(tmp_path, precision, dtype):
    cfg, learn = tiny_learner(precision, tmp_path)
    seen: list[tuple[torch.dtype, bool]] = []
    conv = learn.model.body.layer1[0].conv1.conv
    hook = conv.register_forward_hook(
        lambda m, i, o: seen.append((o.dtype, i[0].is_contiguous(memory_format=torch.channels_last)))
    )
    result = fit(learn, cfg)
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


def test_the_fastai_recipe_trains_the_groups_and_rates_of_fastai_fine_tune(tmp_path, capsys):
    ours, theirs = GroupProbe(), GroupProbe()
    cbs = [ours, EpochLog("probe")]
    cfg, learn, _ = make_learner(tmp_path / "ours", "fastai", 2, cbs=cbs, model_fn=TinyNet, pretrained=True)
    result = fit(learn, cfg)
    epochs = [
        line.split(":")[0].split("probe ")[1] for line in capsys.readouterr().out.splitlines() if "probe " in line
    ]
    assert epochs == ["frozen epoch 1/1", "epoch 1/2", "epoch 2/2"]  # the frozen stage's epoch is named as such
    _, reference, _ = make_learner(tmp_path / "fastai", "fastai", 2, cbs=[theirs], model_fn=TinyNet, pretrained=True)
    reference.fine_tune(2)  # fastai's own: freeze, slice(2e-3) for 1 epoch, unfreeze, slice(1e-5, 1e-3)
    assert result.recipe == "fastai" and len(result.history["epochs"]) == 1 + cfg.epochs  # frozen epoch + epochs
    assert len(ours.fits) == len(theirs.fits) == 2
    for stage, (a, b) in enumerate(zip(ours.fits, theirs.fits, strict=True)):
        assert a["trains"] == b["trains"], stage  # every tensor of every group
        assert a["lr"] == b["lr"] and a["mom"] == b["mom"], stage  # every group's rate at every step
    for p, q in zip(learn.model.parameters(), reference.model.parameters(), strict=True):
        assert torch.equal(p, q)  # and so the same training
    # fastai's rule (Learner.freeze with train_bn=True, Optimizer.set_hyper of slice(stop)): frozen, the body trains
    # its norm layers only, at a tenth of the head's peak rate; unfrozen, everything, body at lr / lr_mult
    body, head = learn.opt.param_lists
    norms = {id(p) for p in norm_bias_params(learn.model, with_bias=False)}
    assert 0 < len(norms) < len(body)
    frozen, unfrozen = ours.fits
    assert frozen["trains"] == [[id(p) in norms for p in body], [True] * len(head)]
    assert unfrozen["trains"] == [[True] * len(body), [True] * len(head)]
    # one-cycle starts at peak / div: frozen peaks slice(2e-3) = [2e-4, 2e-3], div 25; then slice(1e-5, 1e-3), div 5
    assert frozen["lr"][0] == pytest.approx([2e-4 / 25, 2e-3 / 25]) and unfrozen["lr"][0] == pytest.approx([2e-6, 2e-4])
    assert all(body_lr == pytest.approx(head_lr / 10) for body_lr, head_lr in frozen["lr"])


@pytest.mark.parametrize(
    ("machine", "flags", "expected"),
    [
        ("x86_64", {"_is_avx512_bf16_supported": True, "_is_amx_tile_supported": False}, "bf16"),
        ("x86_64", {"_is_avx512_bf16_supported": False, "_is_amx_tile_supported": True}, "bf16"),
        ("x86_64", {"_is_avx512_bf16_supported": False, "_is_amx_tile_supported": False}, "fp32"),
        ("AMD64", {"_is_avx512_bf16_supported": False, "_is_amx_tile_supported": False}, "fp32"),
    ],
)
def test_auto_precision_on_a_cpu_is_bf16_only_where_it_computes_bf16_natively(monkeypatch, machine, flags, expected):
    # emulated bf16 (an AVX2-only CPU) trained 12x slower than fp32 (benchmarks/bench_precision.py), so 'auto' must
    # not pick it there; on CUDA 'auto' stays fp16 whatever the CPU
    monkeypatch.setattr(runtime.platform, "machine", lambda: machine)
    for name, value in flags.items():
        monkeypatch.setattr(torch.cpu, name, lambda value=value: value)
    assert resolve_precision("auto", torch.device("cpu")) == expected
    assert resolve_precision("auto", torch.device("cuda")) == "fp16"
    assert resolve_precision("bf16", torch.device("cpu")) == "bf16"  # asked for by name, it is what runs


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_elsewhere_follows_onednns_bf16_check(monkeypatch, native):
    monkeypatch.setattr(runtime.platform, "machine", lambda: "aarch64")
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: native)
    assert resolve_precision("auto", torch.device("cpu")) == ("bf16" if native else "fp32")


def test_fp16_on_cpu_is_refused():
    with pytest.raises(ValueError, match="PRECISION 'fp16' needs a CUDA device"):
        resolve_precision("fp16", torch.device("cpu"))


class CpuMixedPrecision(MixedPrecision):
    """fastai's MixedPrecision (what PRECISION 'fp16' uses on CUDA) with CPU autocast and a CPU GradScaler, so that
    its scaling, unscaling and skipped steps run with ForeachAdam on this machine."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.seen: list[float] = []  # the scale at the start of each training epoch

    def before_fit(self) -> None:
        self.autocast = torch.autocast("cpu", dtype=torch.float16)
        self.learn.scaler, self.scales = torch.amp.GradScaler("cpu", **self.kwargs), L()

    def before_train(self) -> None:
        self.seen.append(self.learn.scaler.get_scale())

    def after_loss(self) -> None:
        super().after_loss()
        assert torch.isfinite(self.loss).all(), self.loss


def test_fp16_with_fastai_mixed_precision_and_its_scaler_on_a_cpu(tmp_path):
    # growth_interval 1: every step that is not skipped doubles the scale, so the scale shows how many were taken
    kwargs = {"init_scale": 2.0**10, "growth_interval": 1}
    conv_dtypes = []
    whole_mp, broken_mp, resumed_mp = (CpuMixedPrecision(**kwargs) for _ in range(3))
    cfg, learn, _ = make_learner(tmp_path / "whole", "scratch", 2, cbs=[whole_mp], model_fn=TinyNet)
    hook = learn.model.body[0].register_forward_hook(lambda m, i, o: conv_dtypes.append(o.dtype))
    start = [p.detach().clone() for p in learn.model.parameters()]
    result = fit(learn, cfg)
    hook.remove()
    assert conv_dtypes and set(conv_dtypes) == {torch.float16}
    assert all(torch.isfinite(torch.tensor(v)) for v in result.history["train_losses"])
    assert any(not torch.equal(a, b) for a, b in zip(start, learn.model.parameters(), strict=True))
    saved = torch.load(tmp_path / "whole" / CHECKPOINT, weights_only=True)["scaler"]
    assert saved["scale"] > 2.0**10  # steps were taken (not all skipped): the scale grew
    assert len(whole_mp.seen) == 2 and whole_mp.seen[1] > whole_mp.seen[0] == 2.0**10
    cfg, learn, _ = make_learner(
        tmp_path / "broken", "scratch", 2, cbs=[broken_mp, InterruptAt(1, 1)], model_fn=TinyNet
    )
    with pytest.raises(Interrupt):
        fit(learn, cfg)
    cfg, learn, _ = make_learner(tmp_path / "broken", "scratch", 2, cbs=[resumed_mp], model_fn=TinyNet)
    fit(learn, cfg)
    assert broken_mp.seen == whole_mp.seen[:1] and resumed_mp.seen == whole_mp.seen[1:]  # the scale resumed


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
    from tresnet_nb.train.losses import AsymmetricLoss

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
    from tresnet_nb.data import get_dataset
    from tresnet_nb.data.highres import prepare_file_dls

    spec = get_dataset("plant_pathology")
    ds = spec.read(spec.write_fixture(tmp_path / "pp"), task="multi-label")  # BCE/ASL: the one-hot option
    cfg = RunConfig.from_params(
        "ml",
        preset="smoke",
        dataset="plant_pathology",
        precision="fp32",
        output_dir=str(tmp_path / "run"),
        multi_label_loss=loss,
    )
    seed_everything(cfg.seed)
    model = load_model(cfg.arch, cfg.weights, num_classes=len(ds.class_names))
    dls = prepare_file_dls(
        ds, "valid", 64, 8, data_config(model, 64), torch.device("cpu"), tmp_path / "run", cache_dir=tmp_path / "c"
    )
    learn = build_learner(cfg, dls, model, task="multi-label")
    learn.remove_cb(ProgressCallback)
    result = fit(learn, cfg)
    assert result.history["metric_names"] == ["train_loss", "valid_loss", "roc_auc", "mAP"]
    assert all(0.0 <= v <= 1.0 for v in result.history["epochs"][-1][2:4])
    probs, targets = predict(learn)
    from tresnet_nb.evaluation.metrics import mean_average_precision, mean_column_auc

    # the per-epoch values are the metrics of the final validation predictions (no EMA in the scratch recipe)
    assert result.history["epochs"][-1][2] == pytest.approx(mean_column_auc(probs.numpy(), targets.numpy()), abs=1e-4)
    assert result.history["epochs"][-1][3] == pytest.approx(
        mean_average_precision(probs.numpy(), targets.numpy()), abs=1e-4
    )
    assert probs.shape == targets.shape == (len(ds["valid"]), 4)
    assert 0 <= probs.min() and probs.max() <= 1 and set(targets.unique().tolist()) <= {0.0, 1.0}


def bn_model(seed: int = 0) -> torch.nn.Module:
    """A small model whose state has floating (running_mean/var) and integer (num_batches_tracked) buffers."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(64, 3)
    )


def sgd_steps(model: torch.nn.Module, steps: int, after_step) -> None:
    """Train ``model`` for ``steps`` SGD steps on random batches (BN in train mode), calling ``after_step()``."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(steps):
        model(torch.randn(4, 3, 6, 6)).pow(2).mean().backward()
        opt.step()
        opt.zero_grad()
        after_step()


def old_ema_update(average: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """The EMA callback's own update before timm's ModelEmaV3 took over: lerp floating state, copy integer buffers."""
    with torch.no_grad():
        for avg, new in zip(average.state_dict().values(), model.state_dict().values(), strict=True):
            if avg.dtype.is_floating_point:
                avg.lerp_(new.detach(), 1 - decay)
            else:
                avg.copy_(new)


def test_ema_callback_on_timm_model_ema_gives_the_old_update_rule_state():
    import copy
    from types import SimpleNamespace

    from tresnet_nb.train.callbacks import EMA

    model, decay = bn_model(), 0.9
    reference = copy.deepcopy(model).eval().requires_grad_(False)
    ema = EMA(decay)
    ema.learn = SimpleNamespace(model=model)
    ema.before_fit()
    torch.manual_seed(1)
    sgd_steps(model, 6, lambda: (old_ema_update(reference, model, decay), ema.after_step()))
    new, old, live = ema.average.state_dict(), reference.state_dict(), model.state_dict()
    assert list(new) == list(old)  # the keys checkpoints hold
    for key in old:
        assert torch.equal(new[key], old[key]), key
    assert int(new["1.num_batches_tracked"]) == 6  # integer buffers copied from the model
    assert not torch.allclose(new["1.running_mean"], live["1.running_mean"])  # floating buffers averaged, not copied
    assert not ema.average.training and not any(p.requires_grad for p in ema.average.parameters())


def test_ema_state_of_a_checkpoint_written_before_the_swap_resumes(tmp_path):
    import copy
    from types import SimpleNamespace

    from tresnet_nb.train.callbacks import EMA
    from tresnet_nb.train.checkpoint import plain

    model, decay = bn_model(), 0.8
    average = copy.deepcopy(model).eval().requires_grad_(False)  # the old callback's average, as its before_fit made
    torch.manual_seed(2)
    sgd_steps(model, 3, lambda: old_ema_update(average, model, decay))
    torch.save(plain({"ema": average.state_dict()}), tmp_path / "checkpoint.pth")  # as Checkpoint.after_epoch saves
    state = torch.load(tmp_path / "checkpoint.pth", weights_only=True)
    ema = EMA(decay)
    ema.learn = SimpleNamespace(model=bn_model(seed=5))  # resuming: a freshly built model, before fit's before_fit
    ema.learn.model.load_state_dict(model.state_dict())
    ema.load_state_dict(state["ema"])
    ema.before_fit()  # keeps the restored average
    for key, value in average.state_dict().items():
        assert torch.equal(ema.state_dict()[key], value), key
    torch.manual_seed(3)
    resumed = ema.learn.model
    sgd_steps(resumed, 3, ema.after_step)
    torch.manual_seed(3)
    sgd_steps(model, 3, lambda: old_ema_update(average, model, decay))
    for key, value in average.state_dict().items():  # and goes on as the old callback would have
        assert torch.equal(ema.state_dict()[key], value), key


@pytest.mark.parametrize(("recipe", "norms_train"), [("fine_tune", True), ("fine_tune_head", False)])
def test_the_frozen_stage_trains_the_bodys_norms_only_where_the_recipe_says(tmp_path, recipe, norms_train):
    _, learn, _ = make_learner(tmp_path, recipe, epochs=1, model_fn=TinyNet, pretrained=True)  # built frozen
    body = learn.model.body
    norms = [m for m in body if isinstance(m, torch.nn.BatchNorm2d)]
    weights = [m.weight.detach().clone() for m in norms]
    stats = [m.running_mean.clone() for m in norms]
    reached = []  # gradients reaching the body's output: the frozen stage's backward runs through the body
    hook = body.register_full_backward_hook(lambda *_: reached.append(1))
    learn.fit(1, 1e-2)
    hook.remove()
    assert all(m.weight.requires_grad == norms_train for m in norms)
    assert [not torch.equal(m.weight, w) for m, w in zip(norms, weights, strict=True)] == [norms_train] * len(norms)
    assert all(not torch.equal(m.running_mean, s) for m, s in zip(norms, stats, strict=True))  # train-mode statistics
    assert bool(reached) == norms_train
    assert not body[0].weight.requires_grad  # the convolutions stay frozen either way
