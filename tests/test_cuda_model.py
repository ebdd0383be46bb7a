"""CUDA paths of the model layer: exporting a model compiled on CUDA, and the max-batch searches on a real
allocator. Every test is marked ``cuda`` (tests/conftest.py skips them where torch sees no CUDA device)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from tresnet_nb.model.export import export_onnx, export_torchscript
from tresnet_nb.model.load import load_model
from tresnet_nb.model.steps import search_max_batch

pytestmark = [pytest.mark.cuda, pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")]
IMG = 64
CUDA = torch.device("cuda")


def tresnet() -> nn.Module:
    """tresnet_m with 3 classes and non-trivial BatchNorm weights (timm zero-initialises each block's last one)."""
    torch.manual_seed(0)
    model = load_model("tresnet_m", weights=None, num_classes=3)
    gen = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.weight.data = 0.5 + torch.rand(module.num_features, generator=gen)
            module.running_var = 0.5 + torch.rand(module.num_features, generator=gen)
    return model.eval()


def compiled_on_cuda(model: nn.Module, how: str) -> nn.Module:
    """``model`` on CUDA compiled ``how``: torch.compile's wrapper (default inductor) or nn.Module.compile() in place
    with CUDA graphs (what build_learner's compile=True does, in the mode that records graphs); one forward runs."""
    model = model.to(CUDA)
    if how == "wrapper":
        compiled = torch.compile(model)
    else:
        model.compile(mode="reduce-overhead")
        compiled = model
    with torch.no_grad():
        for _ in range(3):  # CUDA graphs are recorded after a warm-up call
            compiled(torch.rand(2, 3, IMG, IMG, device=CUDA))
    torch.cuda.synchronize()
    return compiled


@pytest.mark.parametrize("how", ["wrapper", "in_place_cudagraphs"])
def test_model_compiled_on_cuda_exports_and_runs_on_cpu(how, tmp_path):
    reference = tresnet()
    compiled = compiled_on_cuda(copy.deepcopy(reference), how)
    x = torch.rand(3, 3, IMG, IMG, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = reference(x).numpy()
    tol = 1e-5 * np.abs(expected).max()
    result = export_torchscript(compiled, tmp_path / "model.pt", IMG)
    with torch.no_grad():
        out = torch.jit.load(str(result.path), map_location="cpu")(x)
    assert out.device.type == "cpu"
    np.testing.assert_allclose(out.numpy(), expected, rtol=0, atol=tol)
    ort = pytest.importorskip("onnxruntime")
    onnx = export_onnx(compiled, tmp_path / "model.onnx", IMG)
    session = ort.InferenceSession(str(onnx.path), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"input": x.numpy()})[0], expected, rtol=0, atol=tol)
    assert next(compiled.parameters()).device.type == "cuda"  # the caller's model stays where it was


def test_search_on_cuda_measures_a_training_maximum_below_its_cap():
    model = load_model("tresnet_m", weights=None, num_classes=1000).to(CUDA, memory_format=torch.channels_last)
    found = search_max_batch(model, "train", 224, CUDA, "bf16", channels_last=True)
    # the search ran out of memory (or a library could not allocate) and bisected to the edge
    assert not found.capped and found.smallest_failing == found.largest + 1
    assert any(not ok for _, ok in found.tried) and found.largest >= 64
    assert all(p.grad is None for p in model.parameters())


def test_search_on_cuda_that_reaches_its_cap_says_so():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    found = search_max_batch(model.to(CUDA), "infer", 32, CUDA, "fp16", limit=64)
    assert (found.largest, found.capped, found.shown) == (64, True, ">= 64")
