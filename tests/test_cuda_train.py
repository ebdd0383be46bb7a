"""CUDA paths of training, run where torch sees a CUDA device (``pytest -m cuda``; tests/conftest.py skips them
elsewhere, with the reason): resuming with ForeachAdam and EMA, fp16 with fastai's MixedPrecision and its
GradScaler, channels_last in fp16. CPU stand-ins for each are in tests/test_resume.py and tests/test_train.py."""

from __future__ import annotations

import math

import pytest
import torch
from fastai.callback.core import Callback
from fastai.callback.fp16 import MixedPrecision
from helpers import CHECKPOINT, Interrupt, InterruptAt, make_learner

from tresnet_nb import fit
from tresnet_nb.train.callbacks import EMA, ChannelsLast

pytestmark = pytest.mark.cuda


class StepProbe(Callback):
    """After every optimizer step (skipped ones too): state tensors off their parameter's device, the devices of
    parameters and EMA average, and the highest Adam step count."""

    order = 80  # after MixedPrecision (10), the optimizer step and the EMA update (55)

    def __init__(self) -> None:
        self.misplaced: list[str] = []
        self.devices: set[str] = set()
        self.steps: list[int] = []

    def after_step(self) -> None:
        counts = [0]
        for p, _, state, _ in self.learn.opt.all_params():
            self.devices.add(p.device.type)
            counts.append(int(state.get("step", 0)))
            bad = [k for k, v in state.items() if isinstance(v, torch.Tensor) and v.device != p.device]
            self.misplaced += [f"{k} on {state[k].device}, param on {p.device}" for k in bad]
        ema = next(cb for cb in self.learn.cbs if isinstance(cb, EMA))
        self.devices |= {t.device.type for t in ema.average.state_dict().values()}
        self.steps.append(max(counts))


def cuda_learner(out, recipe: str, epochs: int, cbs, precision: str):
    cfg, learn, _ = make_learner(out, recipe, epochs, cbs=cbs, device="cuda", precision=precision)
    for cb in learn.cbs:
        if isinstance(cb, MixedPrecision):  # a low first scale: no overflow skips the few steps these tests take
            cb.kwargs["init_scale"] = 2.0**8
    return cfg, learn


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_a_resumed_run_steps_on_cuda_with_its_state_there(tmp_path, precision):
    # the checkpoint is mapped to the CPU, the model is on the GPU; fused Adam refused to mix the two
    cfg, learn = cuda_learner(tmp_path, "miil", 2, [InterruptAt(1, 1)], precision)
    with pytest.raises(Interrupt):
        fit(learn, cfg)  # epoch 1 trained and checkpointed, then stopped
    saved = torch.load(tmp_path / CHECKPOINT, map_location="cpu", weights_only=True)
    assert saved["epoch"] == 0 and saved["ema"] is not None
    before = max(int(s.get("step", 0)) for s in saved["opt"]["state"])
    probe = StepProbe()
    cfg, learn = cuda_learner(tmp_path, "miil", 2, [probe], precision)
    result = fit(learn, cfg)
    assert result.resumed_from is not None and len(result.history["epochs"]) == 2
    assert probe.misplaced == [] and probe.devices == {"cuda"}
    assert probe.steps and max(probe.steps) > before  # the optimizer stepped after the restore


class ScaleProbe(Callback):
    """The loss scale when each training epoch starts and ends, and whether every training loss was finite."""

    order = 80

    def __init__(self) -> None:
        self.starts: list[float] = []
        self.ends: list[float] = []
        self.finite: list[bool] = []

    def before_train(self) -> None:  # after Checkpoint.before_fit has restored a resumed scale
        self.starts.append(self.learn.scaler.get_scale())

    def after_loss(self) -> None:
        if self.training:
            self.finite.append(bool(torch.isfinite(self.learn.loss).all()))

    def after_epoch(self) -> None:
        self.ends.append(self.learn.scaler.get_scale())


def fp16_learner(out, epochs: int, cbs, init_scale: float):
    cfg, learn, _ = make_learner(out, "scratch", epochs, cbs=cbs, device="cuda", precision="fp16")
    (mp,) = [cb for cb in learn.cbs if isinstance(cb, MixedPrecision)]  # what PRECISION 'fp16' trains with
    # every step moves the scale (x2 when taken, /2 when skipped); MixedPrecision makes its GradScaler with these
    mp.kwargs.update(init_scale=init_scale, growth_interval=1)
    return cfg, learn


def test_fp16_trains_with_a_finite_loss_and_resumes_the_loss_scale(tmp_path):
    broken, resumed = ScaleProbe(), ScaleProbe()
    cfg, learn = fp16_learner(tmp_path, 3, [broken, InterruptAt(1, 2)], init_scale=2.0**16)
    with pytest.raises(Interrupt):
        fit(learn, cfg)  # 2 epochs of 2 steps: the scale ends at 2**12 or more
    saved = torch.load(tmp_path / CHECKPOINT, map_location="cpu", weights_only=True)["scaler"]
    assert broken.starts[0] == 2.0**16 and saved["scale"] == broken.ends[1] >= 2.0**12
    cfg, learn = fp16_learner(tmp_path, 3, [resumed], init_scale=2.0**10)  # a fresh scaler would start at 2**10
    result = fit(learn, cfg)
    assert resumed.starts == [saved["scale"]]  # the third epoch starts on the checkpoint's scale
    assert broken.finite and resumed.finite and all(broken.finite + resumed.finite)
    assert all(math.isfinite(v) for row in result.history["epochs"] for v in row if v is not None)


class LayoutProbe(Callback):
    """Whether the 3x3 (and larger) convolution weights are channels_last at every training forward, and the
    logits of the first training batch."""

    def __init__(self) -> None:
        self.layouts: list[bool] = []
        self.first: torch.Tensor | None = None

    def after_pred(self) -> None:
        if not self.training:
            return
        weights = [p for p in self.learn.model.parameters() if p.ndim == 4 and p.shape[-1] > 1]
        self.layouts.append(all(p.is_contiguous(memory_format=torch.channels_last) for p in weights))
        if self.first is None:
            self.first = self.pred.detach().float().clone()


def assert_close_in_fp16(a: torch.Tensor, b: torch.Tensor) -> None:
    # fp16 keeps 11 significant bits; different cuDNN kernels per layout round differently, through ~50 layers
    assert a.shape == b.shape and torch.isfinite(a).all() and torch.isfinite(b).all()
    assert (a - b).abs().max() <= 2e-2 * a.abs().max() + 1e-3, (a - b).abs().max()


def test_channels_last_fp16_keeps_the_layout_and_matches_a_contiguous_run(tmp_path):
    last, contiguous = LayoutProbe(), LayoutProbe()
    cfg, learn, _ = make_learner(tmp_path / "cl", "scratch", 1, cbs=[last], device="cuda", precision="fp16")
    fit(learn, cfg)
    cfg2, plain, _ = make_learner(tmp_path / "c", "scratch", 1, cbs=[contiguous], device="cuda", precision="fp16")
    plain.remove_cb(ChannelsLast)
    fit(plain, cfg2)
    assert last.layouts and all(last.layouts)  # channels_last throughout training
    assert contiguous.layouts and not any(contiguous.layouts)  # the reference really is contiguous
    assert_close_in_fp16(last.first, contiguous.first)  # same weights and batch, the other layout
    x, _ = learn.dls.valid.one_batch()
    copy = plain.model.eval()  # contiguous parameters, given the trained channels_last model's weights
    copy.load_state_dict(learn.model.state_dict())
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16):
        out_last = learn.model.eval()(x.contiguous(memory_format=torch.channels_last)).float()
        out_plain = copy(x.contiguous()).float()
    assert_close_in_fp16(out_last, out_plain)


def test_checkpoints_keep_the_gpu_generator_so_device_draws_repeat_after_a_resume(tmp_path):
    from tresnet_nb.train.checkpoint import rng_state, set_rng_state

    _, learn = cuda_learner(tmp_path, "scratch", 1, [], "fp32")
    saved = rng_state(learn)
    assert "cuda" in saved
    first = torch.rand(8, device="cuda")  # what flip_half and erase_boxes draw on the device
    torch.rand(100, device="cuda")
    set_rng_state(learn, saved)
    assert torch.equal(torch.rand(8, device="cuda"), first)
