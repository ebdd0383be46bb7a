"""InPlace-ABN: BatchNorm + invertible activation that keeps only its output for backward (issue 6).

The original TResNet trains with InPlace-ABN (Rota Bulò et al., "In-Place Activated BatchNorm for
Memory-Optimized Training of DNNs", CVPR 2018); timm rebuilt it with plain ``BatchNormAct2d`` (BatchNorm2d +
LeakyReLU or Identity). A plain pair keeps two feature maps for backward: BatchNorm keeps its input, the
(in-place) LeakyReLU its output. InPlace-ABN keeps the output only and, in backward, inverts the activation and
the affine step to recover the normalised input x̂ = (z - β) / γ, from which BatchNorm's gradient follows.

Use: ``model = convert_to_iabn(tnb.load_model("tresnet_m"))`` before training (parameters are shared, so an
optimizer built earlier keeps working); ``convert_from_iabn(model)`` gives timm's layers back, e.g. to export.

Backends:
- ``"pure"``: :class:`InPlaceABN2d`, a PyTorch autograd Function; runs on any device, dtype and memory format.
- ``"inplace_abn"``: the ``inplace_abn`` package's CUDA kernels (``pip install inplace-abn``, which compiles
  against the CUDA toolkit). It is not installable on the CPU machines this project is tested on, so that path
  is written to the package's documented API but untested here.

Near-zero weights: x̂ = (z - β) / γ cannot be recovered where γ ~ 0, and TResNet starts the last BatchNorm of
every residual branch at γ = 0. The paper (and the package) therefore compute with |γ| + eps. The pure backend
keeps |γ| >= eps instead: γ itself where |γ| >= eps, else ±eps (the sign of γ, + at 0), with plain BatchNorm's
gradient for γ (straight through), so a zero-initialised γ learns as it would in plain BatchNorm. Unlike |γ| + eps
this leaves every other weight, negative ones included, exactly as plain BatchNorm has it: a converted model computes
the same function as the unconverted one wherever |γ| >= eps, and moves by at most eps·x̂ elsewhere.

Precision: under bf16/fp16 autocast the convolutions hand BatchNorm half-precision maps, and the saved y is half
precision too (the same bytes as the plain pair's saved input). The forward is plain BatchNorm's; backward inverts
y in its own dtype and accumulates in float32, so gradients differ from plain BatchNorm's by the rounding of y rather
than of x (measured on tresnet_m at 64 px in bf16: outputs equal, gradients within about 2%, while bf16 and fp32
gradients of the plain model differ far more).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from timm.layers import BatchNormAct2d, ConvNormAct
from torch import nn
from torch.autograd.function import once_differentiable

from .memory import _storage_key, buffers_restored, grad_checkpointing

BACKENDS = ("auto", "pure", "inplace_abn")
INSTALL_HINT = (
    "pip install inplace-abn (it compiles against CUDA: it needs the CUDA toolkit matching torch), "
    "or use backend='pure'"
)
PROBE_SIZE = 64  # px of the probe forward deciding which Identity pairs pay; TResNet needs a multiple of 32


def _activation_of(act: nn.Module) -> tuple[str, float] | None:
    """(InPlace-ABN activation name, parameter) of an invertible activation module, else None."""
    if type(act) is nn.Identity:
        return "identity", 0.0
    # slope 0 is ReLU: negative inputs all map to 0 and cannot be recovered
    if type(act) is nn.LeakyReLU and act.negative_slope > 0:
        return "leaky_relu", float(act.negative_slope)
    return None


def effective_weight(weight: torch.Tensor, eps: float) -> torch.Tensor:
    """The weight the pure InPlace-ABN computes with: ``weight`` where |weight| >= ``eps``, else ±eps (+ at 0), so
    that the inversion never divides by less than eps; the gradient passes straight through to ``weight``."""
    floored = torch.where(weight.abs() < eps, torch.where(weight < 0, -eps, eps), weight)
    return weight + (floored - weight).detach()  # exactly `weight` where unchanged: w + 0


class InPlaceABNFunction(torch.autograd.Function):
    """Training-mode BatchNorm (batch statistics, running statistics updated) + LeakyReLU(slope), saving only the
    activated output y, the weight, the bias and the per-channel inverse std for backward.

    ``apply(x, weight, bias, running_mean, running_var, momentum, eps, slope)``; slope 1.0 is the identity.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, momentum, eps, slope):
        w = effective_weight(weight, eps) if weight is not None else None
        # torch.native_batch_norm is the kernel behind nn.BatchNorm2d's training forward: the running statistics
        # (momentum, unbiased running_var) update exactly as a BatchNorm2d's would on the same input.
        y, _mean, invstd = torch.native_batch_norm(x, w, bias, running_mean, running_var, True, momentum, eps)
        if slope != 1.0:
            F.leaky_relu_(y, slope)
        # y is a new tensor, not x written over: x is freed as soon as the caller drops it (the conv output in a
        # ConvNormAct), so what autograd keeps is the same; overwriting x would only lower the forward's transient
        # peak by one feature map, at the risk of corrupting an input the caller still reads.
        ctx.eps, ctx.slope = eps, slope
        ctx.save_for_backward(y, weight, bias, invstd)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, dy):
        y, weight, bias, invstd = ctx.saved_tensors
        if ctx.slope != 1.0:  # undo LeakyReLU: y < 0 exactly where the pre-activation z < 0 (slope > 0)
            z = F.leaky_relu(y, 1.0 / ctx.slope)
            dz = torch.ops.aten.leaky_relu_backward(dy, y, ctx.slope, True)
        else:
            z, dz = y, dy
        gamma = effective_weight(weight, ctx.eps) if weight is not None else torch.ones_like(invstd)
        beta = bias if bias is not None else torch.zeros_like(invstd)
        # BatchNorm's backward from x̂ = (z - β) / γ, by its own kernel (fast on every device and memory format,
        # statistics accumulated in float32 for bf16/fp16): handed z as the "input", β as the "mean" and 1/γ as the
        # "inverse std", the kernel forms exactly that x̂, returns Σ dz·x̂ and Σ dz (γ's and β's gradients), and
        # w·(1/γ)·(dz - mean(dz) - x̂·mean(dz·x̂)) for the input: with w = γ²σ⁻¹ that is BatchNorm's γσ⁻¹(...).
        dx, dweight, dbias = torch.ops.aten.native_batch_norm_backward(
            dz, z, gamma * gamma * invstd, None, None, beta, gamma.reciprocal(), True, ctx.eps,
            [ctx.needs_input_grad[0], weight is not None and ctx.needs_input_grad[1],
             bias is not None and ctx.needs_input_grad[2]],
        )  # fmt: skip
        return dx, dweight, dbias, None, None, None, None, None


class InPlaceABN2d(nn.BatchNorm2d):
    """BatchNorm2d + LeakyReLU(``activation_param``) or identity, keeping only its output for backward in training.

    Parameters and buffers are BatchNorm2d's (same state_dict keys); ``activation`` and ``activation_param`` follow
    the ``inplace_abn`` package's names. In eval mode it is BatchNorm with running statistics + the activation.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True, activation: str = "leaky_relu", activation_param: float = 0.01,
                 device: torch.device | None = None, dtype: torch.dtype | None = None) -> None:  # fmt: skip
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device=device, dtype=dtype)
        if activation not in ("leaky_relu", "identity"):
            raise ValueError(f"activation must be 'leaky_relu' or 'identity', not {activation!r}")
        if activation == "leaky_relu" and not activation_param > 0:
            raise ValueError(f"LeakyReLU slope must be > 0 to be invertible, not {activation_param!r}")
        self.activation = activation
        self.activation_param = float(activation_param)

    @property
    def slope(self) -> float:
        return self.activation_param if self.activation == "leaky_relu" else 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        # the momentum / cumulative-average and batch-statistics rules of nn.BatchNorm2d.forward
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        use_batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        track = not self.training or self.track_running_stats
        running_mean, running_var = (self.running_mean, self.running_var) if track else (None, None)
        if use_batch_stats:
            if x.numel() // x.shape[1] < 2:
                raise ValueError(f"Expected more than 1 value per channel when training, got input size {x.shape}")
            return InPlaceABNFunction.apply(x, self.weight, self.bias, running_mean, running_var, factor, self.eps,
                                            self.slope)  # fmt: skip
        weight = effective_weight(self.weight, self.eps) if self.weight is not None else None
        y = F.batch_norm(x, running_mean, running_var, weight, self.bias, False, 0.0, self.eps)
        return F.leaky_relu(y, self.slope, inplace=True) if self.slope != 1.0 else y

    def extra_repr(self) -> str:
        act = f"leaky_relu[{self.activation_param:g}]" if self.activation == "leaky_relu" else "identity"
        return f"{super().extra_repr()}, activation={act}"


@dataclass(frozen=True)
class IABNInfo:
    """What :func:`convert_to_iabn` did (kept as the model's ``iabn_info`` attribute): the backend used, the
    converted BatchNorm+activation modules and the pairs left plain, each with the reason."""

    backend: str
    converted: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...]


@functools.cache  # a failing import is slow, and _is_iabn asks once per module
def _package_class() -> type[nn.Module] | None:
    try:
        from inplace_abn import InPlaceABN
    except ImportError:  # not installed, or installed against another torch/CUDA (the extension fails to load)
        return None
    return InPlaceABN


def resolve_backend(backend: str = "auto", device: torch.device | None = None) -> str:
    """The backend ``backend`` ('auto', 'pure' or 'inplace_abn') means for a model on ``device``: 'auto' takes the
    ``inplace_abn`` package when it imports and CUDA is in use (the model is on CUDA or a GPU is present)."""
    if backend not in BACKENDS:
        raise ValueError(f"Unknown InPlace-ABN backend {backend!r}; choose one of {BACKENDS}")
    if backend == "pure":
        return "pure"
    package = _package_class()
    if backend == "inplace_abn":
        if package is None:
            raise ImportError(
                f"backend='inplace_abn' needs the inplace_abn package, which does not import: {INSTALL_HINT}"
            )
        return "inplace_abn"
    cuda = (device is not None and device.type == "cuda") or torch.cuda.is_available()
    return "inplace_abn" if package is not None and cuda else "pure"


def _share_state(src: nn.BatchNorm2d, dst: nn.Module) -> nn.Module:
    """``dst`` with ``src``'s parameter and buffer objects (same names), so that an optimizer already holding the
    parameters keeps working and the state_dict is unchanged."""
    for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
        setattr(dst, name, getattr(src, name))
    return dst.train(src.training)


def _to_iabn(bn: BatchNormAct2d, activation: str, param: float, backend: str) -> nn.Module:
    if backend == "inplace_abn":
        package = _package_class()
        assert package is not None  # resolve_backend checked
        new = package(bn.num_features, eps=bn.eps, momentum=bn.momentum, affine=bn.affine,
                      track_running_stats=bn.track_running_stats, activation=activation, activation_param=param)  # fmt: skip
    else:
        new = InPlaceABN2d(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats, activation, param,
                           device="meta")  # fmt: skip
    return _share_state(bn, new)


def _from_iabn(m: nn.Module) -> BatchNormAct2d:
    leaky = m.activation == "leaky_relu"
    new = BatchNormAct2d(m.num_features, eps=m.eps, momentum=m.momentum, affine=m.affine,
                         track_running_stats=m.track_running_stats, apply_act=leaky, act_layer=nn.LeakyReLU,
                         act_kwargs={"negative_slope": m.activation_param} if leaky else None, device="meta")  # fmt: skip
    return _share_state(m, new)


def _is_iabn(m: nn.Module) -> bool:
    package = _package_class()
    return isinstance(m, InPlaceABN2d) or (package is not None and isinstance(m, package))


def _probe_input(model: nn.Module) -> torch.Tensor:
    p = next(model.parameters())
    chans = next((m.in_chans for m in model.modules() if isinstance(getattr(m, "in_chans", None), int)), 3)
    # zeros, not random: the probe must not move the caller's random number generator
    return torch.zeros(2, chans, PROBE_SIZE, PROBE_SIZE, device=p.device, dtype=p.dtype)


def outputs_kept(model: nn.Module, names: list[str], example_input: torch.Tensor | None = None) -> dict[str, bool]:
    """For each module named in ``names``: does a training forward of ``model`` on ``example_input`` (default: two
    zero images at 64 px) keep its output for backward, untouched by later in-place ops? Such an output costs
    nothing more when InPlace-ABN keeps it. The model is left as found (mode, buffers, flags, random state)."""
    modules = dict(model.named_modules())
    outputs: dict[str, tuple[torch.Tensor, int]] = {}
    saved: set[tuple[str, int]] = set()

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.add(_storage_key(t))
        return t

    def recorder(name: str) -> Callable[[nn.Module, object, torch.Tensor], None]:
        def hook(module: nn.Module, args: object, out: torch.Tensor) -> None:
            outputs[name] = (out, out._version)  # the reference keeps the storage's address from being reused

        return hook

    x = _probe_input(model) if example_input is None else example_input
    params = list(model.parameters())
    requires = [p.requires_grad for p in params]
    was_training = model.training
    handles = [modules[name].register_forward_hook(recorder(name)) for name in names]
    with contextlib.ExitStack() as stack:
        stack.callback(model.train, was_training)
        stack.callback(lambda: [h.remove() for h in handles])
        stack.callback(lambda: [p.requires_grad_(r) for p, r in zip(params, requires, strict=True)])
        stack.enter_context(buffers_restored(model))  # the forward updates BatchNorm running statistics
        stack.enter_context(torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []))
        if hasattr(model, "set_grad_checkpointing"):  # checkpointed blocks save nothing; probe the plain graph
            stack.enter_context(grad_checkpointing(model, enable=False))
        for p in params:  # a frozen conv saves its weight, not its input: probe as if everything trains
            p.requires_grad_(True)
        model.train()
        # enable_grad: under no_grad nothing is saved, and every output would look unkept
        with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = model(x)
        del out
    return {
        name: name in outputs
        and _storage_key(outputs[name][0]) in saved
        and outputs[name][0]._version == outputs[name][1]
        for name in names
    }


def convert_to_iabn(model: nn.Module, backend: str = "auto", only_saving: bool = True,
                    example_input: torch.Tensor | None = None) -> nn.Module:  # fmt: skip
    """Replace ``model``'s BatchNorm + invertible activation pairs (timm ``ConvNormAct`` norms with LeakyReLU or
    Identity) by InPlace-ABN of ``backend`` ('auto', 'pure', 'inplace_abn'), in place; returns ``model``.

    ``only_saving`` leaves plain the Identity pairs whose output no later node keeps for backward (e.g. the last
    BatchNorm of a residual branch feeding only the addition): there InPlace-ABN would keep the output instead of
    the input, saving nothing and costing the inversion. Which those are is found by one training forward on
    ``example_input`` (default: two zero images at 64 px). LeakyReLU pairs always pay: the activation keeps the
    output anyway. Parameters and buffers are shared, so the state_dict and an existing optimizer stay valid.
    ``model.iabn_info`` (:class:`IABNInfo`) records the backend and what was converted; undo with
    :func:`convert_from_iabn`.
    """
    params = list(model.parameters())
    resolved = resolve_backend(backend, params[0].device if params else None)  # fails before the probe forward
    if any(_is_iabn(m) for m in model.modules()):
        raise ValueError(f"{type(model).__name__} already has InPlace-ABN layers; call convert_from_iabn(model) first")
    # Only the norms of ConvNormAct blocks (all of TResNet's): their input is the block's own fresh convolution
    # output, read by nothing else, which the inplace_abn package overwrites with the result.
    blocks = {f"{name}.bn" if name else "bn": m for name, m in model.named_modules()
              if isinstance(m, ConvNormAct) and type(m.bn) is BatchNormAct2d}  # fmt: skip
    candidates: dict[str, tuple[str, float]] = {}
    skipped: list[tuple[str, str]] = []
    for name, block in blocks.items():
        act = _activation_of(block.bn.act)
        if act is None:
            skipped.append((name, f"{type(block.bn.act).__name__} activation is not invertible"))
        elif type(block.bn.drop) is not nn.Identity:
            skipped.append((name, f"{type(block.bn.drop).__name__} between the norm and the activation"))
        else:
            candidates[name] = act
    if not candidates:
        raise ValueError(
            f"{type(model).__name__} has no BatchNorm + LeakyReLU/Identity pair to convert (timm ConvNormAct with a "
            f"BatchNormAct2d norm; found {len(blocks)}, skipped: {skipped}). InPlace-ABN needs an invertible "
            "activation: ReLU (e.g. in resnet50) loses its negative inputs, so such models stay plain"
        )
    identity = [name for name, (act, _) in candidates.items() if act == "identity"]
    if only_saving and identity:
        kept = outputs_kept(model, identity, example_input)
        for name in identity:
            if not kept[name]:
                skipped.append(
                    (name, "no later node keeps the output (unmodified) for backward: converting saves nothing")
                )
                del candidates[name]
    if resolved == "inplace_abn":  # the package computes with |γ| + eps: a negative γ would change the function
        negative = [n for n in candidates if blocks[n].bn.weight is not None and bool((blocks[n].bn.weight < 0).any())]
        if negative:
            raise ValueError(
                f"{len(negative)} BatchNorm layers have negative weights (first: {negative[0]!r}); the inplace_abn "
                "package computes with |weight| + eps, which would change the model. Use backend='pure'"
            )
    for name, (act, param) in candidates.items():
        blocks[name].bn = _to_iabn(blocks[name].bn, act, param, resolved)
    model.iabn_info = IABNInfo(resolved, tuple(candidates), tuple(skipped))
    return model


def convert_from_iabn(model: nn.Module) -> nn.Module:
    """Turn ``model``'s InPlace-ABN layers back into timm ``BatchNormAct2d`` (parameters and buffers shared, the
    state_dict unchanged), e.g. to export it; in place, returns ``model``. The plain layers compute with γ itself:
    the same function wherever |γ| >= eps, and at most eps·x̂ apart where the pure backend floored γ (the package's
    |γ| + eps: eps·x̂ apart everywhere, 1e-5 relative for γ ~ 1)."""
    blocks = [m for m in model.modules() if isinstance(m, ConvNormAct) and _is_iabn(m.bn)]
    if not blocks:
        raise ValueError(f"{type(model).__name__} has no InPlace-ABN layer to convert back (see convert_to_iabn)")
    for block in blocks:
        block.bn = _from_iabn(block.bn)
    model.__dict__.pop("iabn_info", None)
    return model
