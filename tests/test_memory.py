"""Saved-for-backward byte counts against hand computations, and timm's gradient checkpointing on TResNet."""

from __future__ import annotations

import copy
import re

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

from tresnet_nb.model.memory import SEARCH_LIMIT, grad_checkpointing, max_batch_size, saved_tensor_bytes
from tresnet_nb.model.steps import _fit_step, find_max_batch, training_step

F32 = 4  # bytes per float32


def test_mlp_saved_bytes_equal_the_hand_count():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    x = torch.randn(5, 4)
    saved = saved_tensor_bytes(model, x)
    # Linear 1 saves its input (its weight only if x needed a grad); ReLU saves its output, which Linear 2 saves
    # again as its input (one storage); Linear 2 also saves its weight (transposed view of a parameter).
    assert saved.total_bytes == (5 * 4 + 5 * 8) * F32
    assert saved.parameter_bytes == 8 * 3 * F32
    assert (saved.n_tensors, saved.n_storages, saved.batch_size) == (4, 2, 5)
    assert saved.per_image_bytes == saved.total_bytes / 5
    assert all(p.grad is None for p in model.parameters())


class TwoViews(nn.Module):
    """Multiplies two halves of one activation: ``mul`` saves both operands, views of the same storage."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.fc(x)
        return a[:, :4] * a[:, 4:]


def test_views_of_one_storage_are_counted_once_at_the_storage_size():
    saved = saved_tensor_bytes(TwoViews(), torch.randn(6, 3))
    # x (6x3) for the weight's grad, and the 6x8 output of fc once, though two 6x4 views of it were saved
    assert saved.total_bytes == (6 * 3 + 6 * 8) * F32
    assert (saved.n_tensors, saved.n_storages) == (3, 2)


def test_loss_is_counted_and_the_model_is_left_as_found():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8)).eval()
    model[0].weight.grad = torch.ones_like(model[0].weight)
    before = copy.deepcopy(model.state_dict())
    x, y = torch.randn(5, 4), torch.tensor([0, 1, 2, 3, 4])
    without = saved_tensor_bytes(model, x)
    with_loss = saved_tensor_bytes(model, x, lambda out: F.cross_entropy(out, y))
    assert with_loss.total_bytes > without.total_bytes  # log_softmax's output and the targets
    assert not model.training
    assert torch.equal(model[0].weight.grad, torch.ones_like(model[0].weight))
    assert model[0].bias.grad is None
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name  # BatchNorm's running statistics restored


@pytest.fixture(scope="module")
def tresnet():
    torch.manual_seed(0)
    return timm.create_model("tresnet_m", pretrained=False, num_classes=10)


@pytest.fixture(scope="module")
def batch():
    torch.manual_seed(1)
    return torch.rand(2, 3, 64, 64), torch.tensor([3, 7])


def test_tresnet_saves_activations_per_image(tresnet, batch):
    x, y = batch
    saved = saved_tensor_bytes(tresnet, x, lambda out: F.cross_entropy(out, y))
    assert saved.total_bytes > 0 and saved.n_tensors >= saved.n_storages > 100
    assert saved.batch_size == 2
    assert saved.per_image_bytes == saved.total_bytes / 2


def test_timm_tresnet_checkpointing_cuts_saved_bytes(tresnet, batch):
    x, y = batch
    plain = saved_tensor_bytes(tresnet, x, lambda out: F.cross_entropy(out, y))
    with grad_checkpointing(tresnet) as model:
        assert model.grad_checkpointing
        checkpointed = saved_tensor_bytes(model, x, lambda out: F.cross_entropy(out, y))
    assert not tresnet.grad_checkpointing  # restored on exit
    # measured 0.23 at 64 px (only block inputs, the stem and the head stay saved); 0.5 leaves a wide margin
    assert checkpointed.total_bytes < 0.5 * plain.total_bytes


def _loss_and_grads(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    return loss.detach(), [p.grad for p in model.parameters()]


def test_checkpointing_gives_the_same_loss_and_gradients(tresnet, batch):
    x, y = batch
    plain, checkpointed = copy.deepcopy(tresnet).train(), copy.deepcopy(tresnet).train()
    loss_a, grads_a = _loss_and_grads(plain, x, y)
    with grad_checkpointing(checkpointed):
        loss_b, grads_b = _loss_and_grads(checkpointed, x, y)
    torch.testing.assert_close(loss_b, loss_a)
    for a, b in zip(grads_a, grads_b, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)
    # the documented caveat: recomputation runs BatchNorm's train-mode forward a second time
    bn_a, bn_b = plain.body.layer1[0].conv1.bn, checkpointed.body.layer1[0].conv1.bn
    assert (int(bn_a.num_batches_tracked), int(bn_b.num_batches_tracked)) == (1, 2)


def test_checkpointing_a_model_without_support_says_how():
    with pytest.raises(TypeError, match="set_grad_checkpointing"), grad_checkpointing(nn.Linear(2, 2)):
        pass


# ---- the largest batch: search with out-of-memory back-off -------------------------------------------------------


def oom_above(threshold: int, calls: list[int]):
    def fits(batch: int) -> None:
        calls.append(batch)
        if batch > threshold:
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {batch} MiB")

    return fits


@pytest.mark.parametrize(("threshold", "start"), [(37, 2), (1, 2), (3, 8), (512, 2), (1000, 1)])
def test_max_batch_search_finds_the_threshold_by_doubling_then_bisection(threshold, start):
    calls: list[int] = []
    found = max_batch_size(oom_above(threshold, calls), start=start, limit=4096)
    assert found.largest == threshold and found.smallest_failing == threshold + 1
    assert [b for b, _ in found.tried] == calls and len(calls) <= 2 * 12 + 2  # logarithmic, not linear
    assert all(ok == (b <= threshold) for b, ok in found.tried)


def test_max_batch_search_stops_at_the_limit():
    found = max_batch_size(oom_above(10_000, []), start=2, limit=100)
    assert (found.largest, found.smallest_failing) == (100, None)
    assert found.capped and found.shown == ">= 100"  # a lower bound, not the maximum
    below = max_batch_size(oom_above(99, []), start=2, limit=100)
    assert not below.capped and below.shown == "99"


def test_max_batch_search_default_cap_is_far_above_what_a_large_gpu_reaches():
    """Inference at 224 px on an H100/H200 reached the old cap of 4096, which was then reported as the maximum."""
    calls: list[int] = []
    found = max_batch_size(oom_above(10**9, calls), start=8)  # never runs out
    assert found.largest == SEARCH_LIMIT >= 2**16 and found.capped and found.shown == f">= {SEARCH_LIMIT}"
    assert calls == [8 * 2**i for i in range(14)]  # doubling only, no bisection above a cap that fitted
    assert max_batch_size(oom_above(5000, []), start=8).largest == 5000  # beyond the old cap, measured exactly


def failing_above(threshold: int, message: str, calls: list[int]):
    def fits(batch: int) -> None:
        calls.append(batch)
        if batch > threshold:
            raise RuntimeError(message)

    return fits


@pytest.mark.parametrize(
    "message",
    [
        "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`",
        "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasLtMatmulAlgoGetHeuristic( ltHandle, ...)`",
        "cuDNN error: CUDNN_STATUS_ALLOC_FAILED",
        "cuDNN error: CUDNN_STATUS_NOT_ENOUGH_WORKSPACE",
        "cuDNN Frontend error: [cudnn_frontend] Error: CUDNN_STATUS_BAD_PARAM_NOT_ENOUGH_WORKSPACE",
    ],
)
def test_max_batch_search_backs_off_on_library_allocation_failures(message):
    calls: list[int] = []
    found = max_batch_size(failing_above(37, message, calls), start=2, limit=4096)
    assert (found.largest, found.smallest_failing, found.capped) == (37, 38, False)
    assert all(ok == (b <= 37) for b, ok in found.tried) and len(calls) > 6


@pytest.mark.parametrize(
    "message",
    [
        "CUDA error: an illegal memory access was encountered",
        "CUDA error: CUBLAS_STATUS_EXECUTION_FAILED when calling `cublasGemmEx(...)`",
        "cuDNN error: CUDNN_STATUS_INTERNAL_ERROR",
    ],
)
def test_max_batch_search_stops_on_other_cuda_errors_near_the_limit(message):
    calls: list[int] = []
    with pytest.raises(RuntimeError, match=re.escape(message)):
        max_batch_size(failing_above(37, message, calls), start=2, limit=4096)
    assert calls == [2, 4, 8, 16, 32, 64]  # the first failure ends the search


def test_max_batch_search_lets_other_errors_through_at_once():
    calls: list[int] = []

    def broken(batch: int) -> None:
        calls.append(batch)
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    with pytest.raises(RuntimeError, match="illegal memory access"):
        max_batch_size(broken)
    assert calls == [2]  # not retried


def test_max_batch_search_when_nothing_fits():
    with pytest.raises(RuntimeError, match="Not even a batch of 1"):
        max_batch_size(oom_above(0, []))


def test_find_max_batch_needs_cuda_and_training_step_runs_on_cpu(tresnet):
    with pytest.raises(ValueError, match="searches a CUDA device.*set BATCH_SIZE"):
        find_max_batch(tresnet, 64, 10, device=torch.device("cpu"))

    def step(batch: int) -> None:
        training_step(tresnet, batch, 64, torch.device("cpu"), "bf16", channels_last=True, num_classes=10)()

    found = max_batch_size(step, start=1, limit=2)  # the real step, here bounded by the limit
    assert found.largest == 2 and all(p.grad is None for p in tresnet.parameters())


def small_convnet() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 10),
    )


def _state_bytes(optimizer: torch.optim.Optimizer, key: str) -> int:
    return sum(s[key].numel() * s[key].element_size() for s in optimizer.state.values() if key in s)


def test_find_max_batch_step_holds_adam_moments_an_ema_copy_and_a_double_validation_batch():
    """The engine's ``fits(batch)`` holds what a fit holds, more than the probe's bare SGD step: it is what lets
    find_max_batch's answer be a batch a real fit survives."""
    torch.manual_seed(0)
    model = small_convnet()
    seen: list[tuple[int, bool]] = []  # (batch, train mode) of every forward of the model
    model.register_forward_hook(lambda module, args, out: seen.append((args[0].shape[0], module.training)))
    held: dict = {}

    def observe(step, average) -> None:  # called inside the step, while everything is still held
        opt = step.optimizer
        held["optimizer"] = type(opt)
        held["moments"] = [sorted(k for k in opt.state[p] if k.startswith("exp_avg")) for p in model.parameters()]
        held["shapes_match"] = all(opt.state[p]["exp_avg_sq"].shape == p.shape for p in model.parameters())
        held["moment_bytes"] = _state_bytes(opt, "exp_avg") + _state_bytes(opt, "exp_avg_sq")
        held["ema_is_a_copy"] = average is not None and average is not model
        if average is None:
            return
        held["ema_keys"] = list(average.state_dict())
        own = {p.data_ptr() for p in model.parameters()}
        held["ema_shares_storage"] = any(p.data_ptr() in own for p in average.parameters())
        held["ema_frozen"] = not any(p.requires_grad for p in average.parameters())
        held["ema_bytes"] = sum(t.numel() * t.element_size() for t in average.state_dict().values())

    fits = _fit_step(model, 32, torch.device("cpu"), 10, precision="fp32", channels_last=False, observe=observe)
    fits(3)
    assert held["optimizer"] is torch.optim.AdamW
    assert held["moments"] == [["exp_avg", "exp_avg_sq"]] * len(list(model.parameters())) and held["shapes_match"]
    assert held["ema_is_a_copy"] and held["ema_keys"] == list(model.state_dict())
    assert not held["ema_shares_storage"] and held["ema_frozen"]
    assert seen == [(3, True), (6, False)]  # the training batch, then validation at twice it in eval mode
    assert all(p.grad is None for p in model.parameters())

    bare = training_step(model, 3, 32, torch.device("cpu"), num_classes=10)  # the probe's step: SGD, no EMA
    bare()
    assert all(set(bare.optimizer.state[p]) == {"momentum_buffer"} for p in model.parameters())
    momentum = _state_bytes(bare.optimizer, "momentum_buffer")
    assert held["moment_bytes"] == 2 * momentum  # Adam's two moments against SGD's one buffer
    assert held["moment_bytes"] + held["ema_bytes"] > 3 * momentum


@pytest.mark.cuda
def test_find_max_batch_on_cuda_leaves_the_model_as_found():
    torch.manual_seed(0)
    model = small_convnet().cuda().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    found = find_max_batch(model, 32, 10, limit=64)
    # a tiny net at 32 px fits 64 images on any GPU: the search reaches its limit and says it is a lower bound
    assert (found.largest, found.smallest_failing, found.capped, found.shown) == (64, None, True, ">= 64")
    assert model.training and all(p.grad is None for p in model.parameters())
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name  # weights and BatchNorm statistics restored
