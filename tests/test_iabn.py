"""InPlace-ABN: the autograd Function against finite differences, a converted tresnet_m against the plain one
(outputs, every gradient, running statistics), the state_dict, the memory it saves, and its errors."""

from __future__ import annotations

import copy
import sys

import pytest
import timm
import torch
import torch.nn.functional as F
from timm.layers import BatchNormAct2d, ConvNormAct
from torch import nn

from tresnet_nb.model import iabn_convert as iabn
from tresnet_nb.model.iabn import InPlaceABN2d, InPlaceABNFunction
from tresnet_nb.model.iabn_convert import IABNInfo, convert_from_iabn, convert_to_iabn, resolve_backend
from tresnet_nb.model.memory import saved_tensor_bytes


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def randomise_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """BatchNorm weights of magnitude 0.5-1.5, a fifth negative, and random biases and running statistics, like a
    trained model's. timm zero-initialises the last γ of each residual branch; there InPlace-ABN computes with
    γ = eps instead (it must, to invert), which is checked apart in test_zero_gamma_*."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                sign = torch.where(torch.rand(n, generator=g) < 0.2, -1.0, 1.0)
                m.weight.copy_((0.5 + torch.rand(n, generator=g)) * sign)
                m.bias.copy_(0.4 * torch.rand(n, generator=g) - 0.2)
                m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))
    return model


@pytest.fixture(scope="module")
def tresnet() -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model("tresnet_m", num_classes=10)


@pytest.fixture(scope="module")
def trained_like(tresnet) -> nn.Module:
    return randomise_norms(copy.deepcopy(tresnet))


@pytest.mark.parametrize("slope", [1e-3, 0.01, 1.0])  # TResNet's block and stem slopes; 1.0 is the identity
@pytest.mark.parametrize("affine", [True, False])
def test_function_gradients_match_finite_differences(slope, affine):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    weight = (0.5 + torch.rand(4, generator=g, dtype=torch.float64)) * torch.tensor([1.0, -1.0, 1.0, -1.0])
    bias = torch.randn(4, generator=g, dtype=torch.float64)
    inputs = [x, weight.requires_grad_(), bias.requires_grad_()] if affine else [x]

    def f(x, weight=None, bias=None):
        return InPlaceABNFunction.apply(x, weight, bias, None, None, 0.1, 1e-5, slope)

    assert torch.autograd.gradcheck(f, tuple(inputs))
    # and it is plain BatchNorm + LeakyReLU, forward and backward
    ref = F.leaky_relu(F.batch_norm(x, None, None, *(inputs[1:] or [None, None]), True, 0.1, 1e-5), slope)
    assert torch.allclose(f(*inputs), ref, atol=1e-12)


def test_function_keeps_only_its_output_and_per_channel_tensors():
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    weight, bias = torch.ones(3, requires_grad=True), torch.zeros(3, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        y = InPlaceABNFunction.apply(x, weight, bias, None, None, 0.1, 1e-5, 0.01)
    full = [t for t in saved if t.numel() == x.numel()]
    assert len(full) == 1 and full[0].untyped_storage().data_ptr() == y.untyped_storage().data_ptr()
    assert all(t.numel() in (3, x.numel()) for t in saved)  # weight, bias, inverse std


def test_zero_gamma_learns_as_plain_batchnorm():
    """TResNet starts each residual branch's last γ at 0: InPlace-ABN computes with γ = eps there (x̂ must stay
    recoverable), and γ and β get plain BatchNorm's gradients, so the branch learns as it would without it."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(4, 3, 5, 5, generator=g, dtype=torch.float64)
    dy = torch.randn(4, 3, 5, 5, generator=g, dtype=torch.float64)
    bias = torch.randn(3, generator=g, dtype=torch.float64)
    grads = []
    for fn in (
        lambda w, b: InPlaceABNFunction.apply(x, w, b, None, None, 0.1, 1e-5, 1.0),
        lambda w, b: F.batch_norm(x, None, None, w, b, True, 0.1, 1e-5),
    ):
        w, b = torch.zeros(3, dtype=torch.float64, requires_grad=True), bias.clone().requires_grad_()
        grads.append(torch.autograd.grad(fn(w, b), (w, b), dy))
    assert rel(grads[0][0], grads[1][0]) < 1e-9 and grads[0][0].abs().min() > 0
    assert rel(grads[0][1], grads[1][1]) < 1e-12


@pytest.mark.parametrize(("momentum", "track"), [(0.1, True), (None, True), (0.3, False)])
def test_layer_follows_batchnorm_momentum_rules_bitwise(momentum, track):
    """Exponential (momentum) and cumulative (None) running averages, and no running statistics at all."""
    plain = BatchNormAct2d(
        5, momentum=momentum, track_running_stats=track, act_kwargs={"negative_slope": 0.01}, act_layer=nn.LeakyReLU
    )
    layer = InPlaceABN2d(5, momentum=momentum, track_running_stats=track, activation_param=0.01)
    layer.load_state_dict(plain.state_dict())
    g = torch.Generator().manual_seed(4)
    for _ in range(3):
        x = torch.randn(4, 5, 3, 3, generator=g)
        assert torch.equal(layer(x), plain(x))
    assert all(torch.equal(a, b) for a, b in zip(layer.buffers(), plain.buffers(), strict=True))
    layer.eval(), plain.eval()
    assert torch.equal(layer(x), plain(x))


def converted_pair(model: nn.Module, memory_format: torch.memory_format) -> tuple[nn.Module, nn.Module]:
    plain = copy.deepcopy(model).to(memory_format=memory_format).train()
    return plain, convert_to_iabn(copy.deepcopy(plain), backend="pure")


@pytest.mark.parametrize("memory_format", [torch.channels_last, torch.contiguous_format])
def test_converted_tresnet_matches_plain_in_train_and_eval(trained_like, memory_format):
    plain, converted = converted_pair(trained_like, memory_format)
    g = torch.Generator().manual_seed(3)
    x = torch.rand(3, 3, 64, 64, generator=g).contiguous(memory_format=memory_format)
    y = torch.randint(0, 10, (3,), generator=g)
    outs, input_grads = [], []
    for model in (plain, converted):
        xi = x.clone().requires_grad_()
        out = model(xi)
        F.cross_entropy(out, y).backward()
        outs.append(out)
        input_grads.append(xi.grad)
    # the issue asks for relative errors below 1e-3; measured about 2e-6 (fp32 rounding of the inversion)
    assert rel(outs[1], outs[0]) < 1e-4
    assert rel(input_grads[1], input_grads[0]) < 1e-4
    plain_params = dict(plain.named_parameters())
    errors = {name: rel(p.grad, plain_params[name].grad) for name, p in converted.named_parameters()}
    assert len(errors) == len(plain_params) and max(errors.values()) < 1e-4, max(errors.items(), key=lambda kv: kv[1])
    plain_buffers = dict(plain.named_buffers())
    for name, b in converted.named_buffers():  # running statistics after the step: BatchNorm2d's own kernel
        assert torch.allclose(b, plain_buffers[name], rtol=1e-6, atol=1e-7), name
    plain.eval(), converted.eval()
    with torch.no_grad():
        assert rel(converted(x), plain(x)) < 1e-6


def test_bf16_autocast_runs_with_plain_outputs(trained_like):
    plain, converted = converted_pair(trained_like, torch.channels_last)
    x = torch.rand(2, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    outs = []
    for model in (plain, converted):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x)
        out.float().square().mean().backward()
        outs.append(out)
    assert outs[1].dtype == torch.bfloat16 and torch.equal(outs[1], outs[0])
    plain_params = dict(plain.named_parameters())
    errors = [rel(p.grad, plain_params[n].grad) for n, p in converted.named_parameters()]
    # y is inverted from bf16 instead of x: measured about 2.5% at worst, 1.5% median
    assert all(e < 0.1 for e in errors), max(errors)


def test_only_paying_pairs_are_converted_and_the_saving_is_real(tresnet):
    plain = copy.deepcopy(tresnet)
    converted = convert_to_iabn(copy.deepcopy(tresnet), backend="pure")
    info = converted.iabn_info
    assert isinstance(info, IABNInfo) and info.backend == "pure"
    leaky = [n for n, m in tresnet.named_modules() if isinstance(m, BatchNormAct2d) and type(m.act) is nn.LeakyReLU]
    # tresnet_m [3, 4, 11, 3]: every LeakyReLU pair, and the Identity pairs of the 7 BasicBlocks, which feed the SE
    # module (its product keeps them anyway); the downsample and Bottleneck conv3 ones feed only the addition
    assert len(leaky) == 36 and set(leaky) <= set(info.converted) and len(info.converted) == 36 + 7
    assert {n for n, _ in info.skipped} == {
        n for n, m in tresnet.named_modules() if isinstance(m, BatchNormAct2d) and n not in info.converted
    }
    assert all(n.endswith("conv2.bn") for n in set(info.converted) - set(leaky))
    x = torch.rand(2, 3, 64, 64)
    before, after = saved_tensor_bytes(plain, x).total_bytes, saved_tensor_bytes(converted, x).total_bytes
    # measured x0.755 here (x0.747 at 224 px, batch 8; the target: <= 0.80 at 224 px)
    assert after / before < 0.77, after / before
    # converting the skipped Identity pairs too saves next to nothing more: they swap the kept input for the output
    # and drop only BatchNorm's per-channel means (measured 1.0% here, less at larger images)
    everything = convert_to_iabn(copy.deepcopy(tresnet), backend="pure", only_saving=False)
    assert len(everything.iabn_info.converted) == 60
    assert saved_tensor_bytes(everything, x).total_bytes > 0.98 * after


def test_state_dict_round_trip_and_conversion_back(trained_like):
    plain = copy.deepcopy(trained_like)
    reference = {k: v.clone() for k, v in plain.state_dict().items()}
    weight = plain.body.conv1.bn.weight
    converted = convert_to_iabn(plain, backend="pure")
    assert converted is plain and isinstance(converted.body.conv1.bn, InPlaceABN2d)
    assert converted.body.conv1.bn.weight is weight  # shared: an optimizer made before still holds the parameter
    state = converted.state_dict()
    assert list(state) == list(reference) and all(torch.equal(state[k], reference[k]) for k in reference)
    fresh = convert_to_iabn(copy.deepcopy(trained_like), backend="pure")
    fresh.load_state_dict(reference)  # strict: the unconverted model's checkpoint loads as it is
    back = convert_from_iabn(converted)
    assert not hasattr(back, "iabn_info") and not any(isinstance(m, InPlaceABN2d) for m in back.modules())
    assert repr(back) == repr(trained_like) and list(back.state_dict()) == list(reference)
    x = torch.rand(2, 3, 64, 64)
    back.eval(), trained_like.eval()
    with torch.no_grad():
        assert torch.equal(back(x), trained_like(x))


def test_conversion_leaves_the_model_as_found(tresnet):
    model = copy.deepcopy(tresnet).eval()
    model.body.conv1.conv.weight.requires_grad_(False)
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    rng = torch.get_rng_state()
    convert_to_iabn(model, backend="pure")
    assert not model.training and not model.body.conv1.conv.weight.requires_grad
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(b, buffers[k]) for k, b in model.named_buffers())


# (package imports, CUDA in use, training precision) -> what backend='auto' takes: the package only on CUDA and only
# in the precisions its kernels dispatch (float, half; no bfloat16)
AUTO_BACKENDS = [
    (False, False, "fp32", "pure"),
    (False, False, "fp16", "pure"),
    (False, False, "bf16", "pure"),
    (False, True, "fp32", "pure"),
    (False, True, "fp16", "pure"),
    (False, True, "bf16", "pure"),
    (True, False, "fp32", "pure"),
    (True, False, "fp16", "pure"),
    (True, False, "bf16", "pure"),
    (True, True, "fp32", "inplace_abn"),
    (True, True, "fp16", "inplace_abn"),
    (True, True, "bf16", "pure"),
]


@pytest.mark.parametrize(("package", "cuda", "precision", "expected"), AUTO_BACKENDS)
def test_auto_backend_for_every_package_device_and_precision(package, cuda, precision, expected):
    assert iabn.auto_backend(package, cuda, precision) == expected


@pytest.mark.parametrize(("package", "cuda", "precision", "expected"), AUTO_BACKENDS)
def test_resolve_backend_probes_the_package_and_cuda(package, cuda, precision, expected, monkeypatch):
    """The same table through resolve_backend, the package probe and torch.cuda.is_available replaced."""
    stand_in = type("InPlaceABN", (InPlaceABN2d,), {})
    monkeypatch.setattr(iabn, "_package_class", lambda: stand_in if package else None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    assert resolve_backend("auto", torch.device("cpu"), precision) == expected
    assert resolve_backend("pure", torch.device("cpu"), precision) == "pure"


def test_auto_needs_the_precision_only_where_the_package_could_run(monkeypatch):
    assert iabn.auto_backend(False, True, None) == "pure" and iabn.auto_backend(True, False, None) == "pure"
    with pytest.raises(ValueError, match=r"kernels take fp32 and fp16 but not bf16.*precision='fp32'\|'fp16'\|'bf16'"):
        iabn.auto_backend(True, True, None)
    with pytest.raises(ValueError, match=r"Unknown training precision 'auto'.*resolve_precision"):
        iabn.auto_backend(True, True, "auto")


def test_bf16_on_cuda_with_the_package_converts_to_the_pure_backend(tresnet, monkeypatch):
    stand_in = type("InPlaceABN", (InPlaceABN2d,), {})
    monkeypatch.setattr(iabn, "_package_class", lambda: stand_in)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    model = convert_to_iabn(copy.deepcopy(tresnet), precision="bf16")
    assert model.iabn_info.backend == "pure" and type(model.body.conv1.bn) is InPlaceABN2d
    fp16 = convert_to_iabn(copy.deepcopy(tresnet), precision="fp16")
    assert fp16.iabn_info.backend == "inplace_abn" and type(fp16.body.conv1.bn) is stand_in
    with pytest.raises(ValueError, match=r"backend='inplace_abn' cannot train in 'bf16'.*backend='pure'"):
        convert_to_iabn(copy.deepcopy(tresnet), backend="inplace_abn", precision="bf16")


def test_unknown_backend_is_refused(tresnet):
    with pytest.raises(ValueError, match=r"Unknown InPlace-ABN backend 'cuda'.*'pure'"):
        convert_to_iabn(copy.deepcopy(tresnet), backend="cuda")


def test_missing_package_says_how_to_install(tresnet, monkeypatch):
    monkeypatch.setitem(sys.modules, "inplace_abn", None)  # import fails, installed or not
    iabn._package_class.cache_clear()
    try:
        with pytest.raises(ImportError, match=r"pip install inplace-abn.*CUDA toolkit"):
            convert_to_iabn(copy.deepcopy(tresnet), backend="inplace_abn")
        assert resolve_backend("auto") == "pure"
    finally:
        iabn._package_class.cache_clear()


def test_package_backend_plumbing_with_a_stand_in(tresnet, trained_like, monkeypatch):
    """The inplace_abn package is not installable here (CUDA): a stand-in with its constructor checks what we build
    around it; the package's kernels themselves are untested."""
    stand_in = type("InPlaceABN", (InPlaceABN2d,), {})
    monkeypatch.setattr(iabn, "_package_class", lambda: stand_in)
    model = convert_to_iabn(copy.deepcopy(tresnet), backend="inplace_abn")
    assert model.iabn_info.backend == "inplace_abn" and type(model.body.conv1.bn) is stand_in
    assert model.body.conv1.bn.activation == "leaky_relu" and model.body.conv1.bn.activation_param == 0.01
    assert not any(isinstance(m, stand_in) for m in convert_from_iabn(model).modules())
    # the package computes with |γ| + eps: a model with negative weights would change, so it is refused
    with pytest.raises(ValueError, match=r"negative weights.*backend='pure'"):
        convert_to_iabn(copy.deepcopy(trained_like), backend="inplace_abn")


def test_models_without_invertible_pairs_are_refused():
    resnet = timm.create_model("resnet18", num_classes=10)  # BatchNorm2d + ReLU: nothing to invert
    with pytest.raises(ValueError, match=r"no BatchNorm \+ LeakyReLU/Identity pair.*found 0"):
        convert_to_iabn(resnet)
    relu_block = nn.Sequential(ConvNormAct(3, 8, 3, act_layer=nn.ReLU))
    with pytest.raises(ValueError, match=r"ReLU activation is not invertible"):
        convert_to_iabn(relu_block)
    with pytest.raises(ValueError, match=r"no InPlace-ABN layer"):
        convert_from_iabn(resnet)


def test_converting_twice_is_refused(tresnet):
    converted = convert_to_iabn(copy.deepcopy(tresnet), backend="pure")
    with pytest.raises(ValueError, match=r"already has InPlace-ABN layers.*convert_from_iabn"):
        convert_to_iabn(converted, backend="pure")


@pytest.mark.cuda
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_auto_backend_trains_on_cuda_in_each_precision(tresnet, precision):
    """On a real GPU: 'auto' takes the package only where its kernels dispatch the dtype (fp16, not bf16), and a
    training step under that autocast runs there with a finite loss and gradients on every converted norm."""
    model = convert_to_iabn(copy.deepcopy(tresnet).cuda().train(), precision=precision)
    package = iabn._package_class() is not None
    assert model.iabn_info.backend == ("inplace_abn" if package and precision == "fp16" else "pure")
    x = torch.rand(4, 3, 64, 64, device="cuda")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    with torch.autocast("cuda", dtype=dtype):
        loss = F.cross_entropy(model(x), torch.arange(4, device="cuda") % 10)
    loss.backward()
    assert torch.isfinite(loss)
    norms = [m for m in model.modules() if isinstance(m, InPlaceABN2d) or type(m).__name__ == "InPlaceABN"]
    assert norms and all(m.weight.grad is not None and torch.isfinite(m.weight.grad).all() for m in norms)
