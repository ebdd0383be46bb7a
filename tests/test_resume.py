"""Never lose a run: a checkpoint every epoch, and a resumed run ends where an uninterrupted one does.

What is saved and restored (weights, optimizer moments, EMA, loss scale, RNG, schedule position) does not depend on
the network, so the in-process tests train helpers.TinyNet (a fit in about a second); the SIGKILL test trains the
smoke preset's TResNet-M in its own processes, so that a real network's checkpoint is the file the kill lands on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from fastai.callback.core import Callback
from helpers import CHECKPOINT, Interrupt, InterruptAt, TinyNet, make_learner
from torch import nn

from tresnet_nb import fit
from tresnet_nb.recipes import get_recipe
from tresnet_nb.train.callbacks import EMA
from tresnet_nb.train.fit import _restore, plan_stages


class HalvingScaler(Callback):
    """Stands in for fastai's MixedPrecision (CUDA only) on a CPU: a fresh loss scaler each fit, halved each epoch."""

    order = 10

    def __init__(self, seen: list) -> None:
        self.seen = seen

    def before_fit(self) -> None:
        self.learn.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
        self.learn.scaler.scale(torch.ones(()))  # the scale tensor exists from the first use

    def before_train(self) -> None:
        self.seen.append(self.learn.scaler.get_scale())

    def after_train(self) -> None:  # not in epochs a resumed fit skips (MixedPrecision updates after steps)
        self.learn.scaler.update(new_scale=self.learn.scaler.get_scale() / 2)


def run(
    out: Path,
    recipe: str,
    epochs: int,
    pretrained: bool,
    interrupt: tuple[int, int] | None = None,
    phases=None,
    cbs=(),
    model_fn=TinyNet,
):
    cfg, learn, dls_for = make_learner(out, recipe, epochs, cbs, model_fn, pretrained=pretrained, progressive=phases)
    if interrupt:
        learn.add_cb(InterruptAt(*interrupt))
    result = fit(learn, cfg, dls_for=dls_for)
    return result, {k: v.detach().clone() for k, v in learn.model.state_dict().items()}


def assert_same_run(a, b):
    (ra, wa), (rb, wb) = a, b
    assert len(ra.history["epochs"]) == len(rb.history["epochs"])
    for x, y in zip(ra.history["epochs"], rb.history["epochs"], strict=True):
        assert x == pytest.approx(y, abs=1e-4)
    assert ra.history["train_losses"] == pytest.approx(rb.history["train_losses"], abs=1e-4)
    for key in wa:
        if wa[key].dtype.is_floating_point:
            assert torch.allclose(wa[key], wb[key], atol=1e-4), key


@pytest.mark.parametrize(
    ("recipe", "epochs", "pretrained", "interrupt"),
    [
        ("scratch", 3, False, (1, 2)),  # one one-cycle fit, stopped before its third epoch
        ("fastai", 2, True, (2, 1)),  # fine_tune: frozen stage done, stopped inside the second stage
        ("miil", 3, False, (1, 1)),  # cosine with warm-up, label smoothing and EMA
    ],
)
def test_interrupted_then_resumed_equals_uninterrupted(tmp_path, recipe, epochs, pretrained, interrupt):
    whole = run(tmp_path / "whole", recipe, epochs, pretrained)
    with pytest.raises(Interrupt):
        run(tmp_path / "broken", recipe, epochs, pretrained, interrupt)
    assert (tmp_path / "broken" / CHECKPOINT).is_file()
    resumed = run(tmp_path / "broken", recipe, epochs, pretrained)
    assert resumed[0].resumed_from is not None
    assert_same_run(whole, resumed)


@pytest.mark.parametrize(
    "interrupt",
    [
        (2, 0),  # at the boundary: phase 1 done, the 64 px loaders not yet built
        (2, 1),  # inside phase 2, after its first epoch
    ],
)
def test_progressive_resizing_resumes_like_an_uninterrupted_run(tmp_path, interrupt):
    phases = "32:1:4,64:2:8"  # fastai recipe: a frozen stage at 32 px, then 32 px and 64 px phases
    whole = run(tmp_path / "whole", "fastai", 1, True, phases=phases)  # EPOCHS gives way to the phases
    with pytest.raises(Interrupt):
        run(tmp_path / "broken", "fastai", 1, True, interrupt=(interrupt[0] + 1, interrupt[1]), phases=phases)
    resumed = run(tmp_path / "broken", "fastai", 1, True, phases=phases)
    assert resumed[0].resumed_from is not None and resumed[0].epochs == 3
    assert_same_run(whole, resumed)


class FitProbe(Callback):
    """Per fit: the live weights and the EMA's average when it starts, and the live weights after its last epoch."""

    order = 56  # after EMA.before_fit has made the average

    def __init__(self) -> None:
        self.fits: list[dict[str, dict[str, torch.Tensor]]] = []

    @staticmethod
    def _copy(module: nn.Module) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in module.state_dict().items()}

    def before_fit(self) -> None:
        ema = next(cb for cb in self.learn.cbs if isinstance(cb, EMA))
        self.fits.append({"start": self._copy(self.learn.model), "average": self._copy(ema.average)})

    def after_epoch(self) -> None:  # after validation has put the live weights back
        self.fits[-1]["end"] = self._copy(self.learn.model)


def assert_equal_states(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert list(a) == list(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_ema_goes_into_the_model_once_so_a_phase_boundary_resume_is_exact(tmp_path):
    phases = "32:1:4,48:1:8"  # miil: EMA, cosine with warm-up; two progressive phases, one fit each
    whole_probe, resumed_probe = FitProbe(), FitProbe()
    whole = run(tmp_path / "whole", "miil", 1, False, phases=phases, cbs=[whole_probe], model_fn=TinyNet)
    first, second = whole_probe.fits
    assert_equal_states(second["start"], first["end"])  # phase 2 goes on from phase 1's live weights...
    floating = [k for k, v in second["start"].items() if v.dtype.is_floating_point]
    assert any(not torch.equal(second["start"][k], second["average"][k]) for k in floating)  # ...not the average
    ema = next(cb for cb in whole_probe.learn.cbs if isinstance(cb, EMA))
    assert_equal_states(whole[1], ema.state_dict())  # and the whole run ends on the average
    assert any(not torch.equal(whole[1][k], second["end"][k]) for k in floating)
    with pytest.raises(Interrupt):  # phase 1 done and checkpointed, phase 2 not started
        run(tmp_path / "broken", "miil", 1, False, interrupt=(2, 0), phases=phases, model_fn=TinyNet)
    resumed = run(tmp_path / "broken", "miil", 1, False, phases=phases, cbs=[resumed_probe], model_fn=TinyNet)
    assert resumed[0].resumed_from.startswith("stage 1 epoch 1")
    (only,) = resumed_probe.fits
    assert_equal_states(only["start"], second["start"])
    assert_equal_states(only["average"], second["average"])
    assert_equal_states(only["end"], second["end"])  # live weights after phase 2
    assert_equal_states(resumed[1], whole[1])  # the averages the runs end on
    assert resumed[0].history["train_losses"] == whole[0].history["train_losses"]
    assert resumed[0].history["epochs"] == whole[0].history["epochs"]


@pytest.mark.filterwarnings("ignore:for .*copying from a non-meta parameter:UserWarning")
@pytest.mark.parametrize("move", ["meta", "float64"])
def test_restored_optimizer_and_ema_state_sit_where_the_model_is(tmp_path, move):
    # on CUDA the checkpoint is mapped to the CPU while the model is on the GPU: here the model is moved instead, to
    # the meta device or to float64, and every restored state tensor must follow its parameter
    run(tmp_path, "miil", 1, False, model_fn=TinyNet)  # a checkpoint with Adam moments and an EMA
    state = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    _, learn, _ = make_learner(tmp_path, "miil", 1, model_fn=TinyNet)
    ema = next(cb for cb in learn.cbs if isinstance(cb, EMA))
    ema.load_state_dict(state["ema"])  # an average made before the model moves (as a validation would make one)
    learn.model.to("meta" if move == "meta" else torch.float64)
    _restore(learn, state, plan_stages(get_recipe("miil"), 1, None, False)[0], loader_rng=True)
    params = [p for p, *_ in learn.opt.all_params()]
    assert len(params) == len(list(learn.model.parameters()))
    for p, _, s, _ in learn.opt.all_params():
        for key in ("grad_avg", "sqr_avg"):
            assert (s[key].device, s[key].dtype) == (p.device, p.dtype), key
    device = next(learn.model.parameters()).device
    assert all(t.device == device for t in ema.average.state_dict().values())
    if move == "float64":  # and the fused step that would refuse mixed tensors runs
        for p in params:
            p.grad = torch.ones_like(p)
        before = params[0].detach().clone()
        learn.opt.step()
        assert not torch.equal(before, params[0])


def test_the_loss_scale_resumes_where_it_was(tmp_path):
    whole, broken, resumed = [], [], []
    run(tmp_path / "whole", "scratch", 3, False, cbs=[HalvingScaler(whole)])
    with pytest.raises(Interrupt):
        run(tmp_path / "broken", "scratch", 3, False, interrupt=(1, 2), cbs=[HalvingScaler(broken)])
    assert torch.load(tmp_path / "broken" / CHECKPOINT, weights_only=True)["scaler"]["scale"] == 2.0**14
    run(tmp_path / "broken", "scratch", 3, False, cbs=[HalvingScaler(resumed)])
    assert whole == [2.0**16, 2.0**15, 2.0**14] and broken == whole[:2] and resumed == whole[2:]


def test_rerunning_a_finished_run_trains_nothing_and_keeps_its_weights(tmp_path):
    first = run(tmp_path, "scratch", 1, False)
    again = run(tmp_path, "scratch", 1, False)
    assert again[0].resumed_from is not None and again[0].images_per_second == 0
    assert_same_run(first, again)


def test_a_checkpoint_of_another_configuration_is_not_resumed(tmp_path):
    run(tmp_path, "scratch", 1, False)
    with pytest.raises(ValueError, match="different configuration or plan.*use another OUTPUT_DIR"):
        run(tmp_path, "scratch", 2, False)


def test_checkpoint_holds_only_tensors_and_plain_data(tmp_path):
    run(tmp_path, "miil", 1, False)
    state = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    assert {"model", "opt", "ema", "rng", "history", "fingerprint"} <= set(state)
    assert state["ema"] is not None and state["epoch"] == 0


SCRIPT = """
import sys, json
from fastai.callback.progress import ProgressCallback
import torch
from tresnet_nb import RunConfig, array_dls, build_learner, data_config, fit, load_model, load_splits, seed_everything
# precision auto: bf16 autocast where the CPU has native bf16, fp32 where it would emulate it (several times slower)
cfg = RunConfig.from_params("k", preset="smoke", precision="auto", max_items=48, batch_size=8, epochs=3,
                            output_dir=sys.argv[1])
seed_everything(cfg.seed)
model = load_model(cfg.arch, cfg.weights, num_classes=10)
splits = load_splits(cfg.dataset, None, cfg.max_items)
dls = array_dls(splits, cfg.img_size, cfg.batch_size, data_config(model, cfg.img_size), torch.device("cpu"))
learn = build_learner(cfg, dls, model)
learn.remove_cb(ProgressCallback)
result = fit(learn, cfg)
print("RESULT", json.dumps(result.history["epochs"]))
"""


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(tmp_path):
    def launch(out):
        return subprocess.Popen([sys.executable, "-c", SCRIPT, str(out)], stdout=subprocess.PIPE, text=True)

    whole = launch(tmp_path / "whole").communicate(timeout=600)[0]
    victim = launch(tmp_path / "killed")
    checkpoint = tmp_path / "killed" / CHECKPOINT
    deadline = time.time() + 300
    while not checkpoint.exists() and time.time() < deadline and victim.poll() is None:
        time.sleep(0.05)
    assert checkpoint.exists() and victim.poll() is None, "the run ended before it could be killed"
    time.sleep(0.5)  # into the second epoch
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL
    saved = torch.load(checkpoint, weights_only=True)
    assert saved["epoch"] < 2  # killed before the run finished
    resumed = launch(tmp_path / "killed").communicate(timeout=600)[0]
    assert "Resuming after" in resumed
    line = lambda text: [ln for ln in text.splitlines() if ln.startswith("RESULT")][0]  # noqa: E731
    import json

    a, b = json.loads(line(whole)[7:]), json.loads(line(resumed)[7:])
    assert len(a) == len(b) == 3
    for x, y in zip(a, b, strict=True):
        assert x == pytest.approx(y, abs=1e-4)


def test_a_finished_run_drops_its_checkpoint_and_a_rerun_trains_nothing(tmp_path, capsys):
    from tresnet_nb import drop_checkpoint, save_weights

    first = run(tmp_path, "miil", 2, False)  # EMA: the final weights are the average
    assert "kept" in drop_checkpoint(tmp_path) and (tmp_path / CHECKPOINT).is_file()  # final weights not saved yet
    save_weights(_model_of(first), tmp_path / "model.safetensors")
    assert "KEEP_CHECKPOINT" in drop_checkpoint(tmp_path, keep=True) and (tmp_path / CHECKPOINT).is_file()
    said = drop_checkpoint(tmp_path)
    assert said.startswith(f"removed {CHECKPOINT} (") and not (tmp_path / CHECKPOINT).exists()
    assert (tmp_path / "finished.json").is_file() and (tmp_path / "model.safetensors").is_file()
    capsys.readouterr()
    again = run(tmp_path, "miil", 2, False)  # the record and the weights: nothing is trained
    assert f"Training already complete in {tmp_path / 'finished.json'}" in capsys.readouterr().out
    assert again[0].images_per_second == 0 and again[0].resumed_from.startswith("stage 1 epoch 2 of")
    assert again[0].history == first[0].history and again[0].recipe == "miil" and again[0].epochs == 2
    for key, value in first[1].items():
        assert torch.equal(again[1][key], value), key
    assert not (tmp_path / CHECKPOINT).exists()  # nothing trained, nothing checkpointed
    with pytest.raises(ValueError, match="finished run of a different configuration"):
        run(tmp_path, "miil", 3, False)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="final weights .* are missing"):
        run(tmp_path, "miil", 2, False)


def _model_of(result):
    model = TinyNet(10)
    model.load_state_dict(result[1])
    return model
