"""Conversion of a timm TResNet to InPlace-ABN and back (:mod:`tresnet_nb.model.iabn` has the layer and the backends'
notes): which BatchNorm+activation pairs to convert, with which backend, sharing the parameters so that an optimizer
built earlier keeps working."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
from timm.layers import BatchNormAct2d, ConvNormAct
from torch import nn

from .iabn import InPlaceABN2d, _activation_of
from .memory import _storage_key, buffers_restored, grad_checkpointing

BACKENDS = ("auto", "pure", "inplace_abn")
INSTALL_HINT = (
    "pip install inplace-abn (it compiles against CUDA: it needs the CUDA toolkit matching torch), "
    "or use backend='pure'"
)
PROBE_SIZE = 64  # px of the probe forward deciding which Identity pairs pay; TResNet needs a multiple of 32
PRECISIONS = ("fp32", "fp16", "bf16")  # training precisions, resolved ('auto' is train.callbacks.resolve_precision's)
# The package's CUDA kernels dispatch float, double and half only (AT_DISPATCH_FLOATING_TYPES_AND_HALF in
# src/inplace_abn_cuda.cu, mapillary/inplace_abn b50bfe9): a bf16 feature map fails in its first kernel.
PACKAGE_PRECISIONS = ("fp32", "fp16")


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


def _check_precision(precision: str | None) -> None:
    if precision is not None and precision not in PRECISIONS:
        raise ValueError(
            f"Unknown training precision {precision!r} for InPlace-ABN; choose one of {PRECISIONS} or None "
            "(resolve 'auto' first: tresnet_nb.train.callbacks.resolve_precision)"
        )


def auto_backend(package: bool, cuda: bool, precision: str | None) -> str:
    """The backend ``backend='auto'`` takes, from whether the ``inplace_abn`` ``package`` imports, whether ``cuda``
    is in use and the training ``precision`` ('fp32', 'fp16', 'bf16'; None if not given): the package on CUDA in
    fp32/fp16, the pure backend otherwise (its kernels have no bf16). Where the package could run, the choice
    depends on the precision, so None is refused there rather than guessed."""
    _check_precision(precision)
    if not (package and cuda):
        return "pure"
    if precision is None:
        raise ValueError(
            "backend='auto' found the inplace_abn package and CUDA; its kernels take fp32 and fp16 but not bf16, so "
            "pass the precision you train in: convert_to_iabn(model, precision='fp32'|'fp16'|'bf16'), or choose "
            "backend='pure'"
        )
    return "inplace_abn" if precision in PACKAGE_PRECISIONS else "pure"


def resolve_backend(backend: str = "auto", device: torch.device | None = None, precision: str | None = None) -> str:
    """The backend ``backend`` ('auto', 'pure' or 'inplace_abn') means for a model on ``device`` trained in
    ``precision``: 'auto' is :func:`auto_backend` (CUDA in use: the model is on CUDA or a GPU is present)."""
    if backend not in BACKENDS:
        raise ValueError(f"Unknown InPlace-ABN backend {backend!r}; choose one of {BACKENDS}")
    _check_precision(precision)
    if backend == "pure":
        return "pure"
    package = _package_class()
    if backend == "inplace_abn":
        if package is None:
            raise ImportError(
                f"backend='inplace_abn' needs the inplace_abn package, which does not import: {INSTALL_HINT}"
            )
        if precision is not None and precision not in PACKAGE_PRECISIONS:
            raise ValueError(
                f"backend='inplace_abn' cannot train in {precision!r}: the package's kernels take "
                f"{PACKAGE_PRECISIONS} only. Use backend='pure' (or 'auto', which picks it) for {precision!r}"
            )
        return "inplace_abn"
    cuda = (device is not None and device.type == "cuda") or torch.cuda.is_available()
    return auto_backend(package is not None, cuda, precision)


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
        new = package(
            bn.num_features,
            eps=bn.eps,
            momentum=bn.momentum,
            affine=bn.affine,
            track_running_stats=bn.track_running_stats,
            activation=activation,
            activation_param=param,
        )
    else:
        new = InPlaceABN2d(
            bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats, activation, param, device="meta"
        )
    return _share_state(bn, new)


def _from_iabn(m: nn.Module) -> BatchNormAct2d:
    leaky = m.activation == "leaky_relu"
    new = BatchNormAct2d(
        m.num_features,
        eps=m.eps,
        momentum=m.momentum,
        affine=m.affine,
        track_running_stats=m.track_running_stats,
        apply_act=leaky,
        act_layer=nn.LeakyReLU,
        act_kwargs={"negative_slope": m.activation_param} if leaky else None,
        device="meta",
    )
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


def convertible_norms(model: nn.Module):
    """The norms of ``model``'s ConvNormAct blocks by name, those InPlace-ABN can replace (name -> (activation, its
    parameter)), and the others with the reason (name, why)."""
    # Only the norms of ConvNormAct blocks (all of TResNet's): their input is the block's own fresh convolution
    # output, read by nothing else, which the inplace_abn package overwrites with the result.
    blocks = {
        f"{name}.bn" if name else "bn": m
        for name, m in model.named_modules()
        if isinstance(m, ConvNormAct) and type(m.bn) is BatchNormAct2d
    }
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
    return blocks, candidates, skipped


def convert_to_iabn(
    model: nn.Module,
    backend: str = "auto",
    only_saving: bool = True,
    example_input: torch.Tensor | None = None,
    precision: str | None = None,
) -> nn.Module:
    """Replace ``model``'s BatchNorm + invertible activation pairs (timm ``ConvNormAct`` norms with LeakyReLU or
    Identity) by InPlace-ABN of ``backend`` ('auto', 'pure', 'inplace_abn'), in place; returns ``model``.
    ``precision`` is the one it will train in ('fp32', 'fp16', 'bf16'): 'auto' needs it where the package and CUDA
    are present, since the package has no bf16 kernels (:func:`auto_backend`).

    ``only_saving`` leaves plain the Identity pairs whose output no later node keeps for backward (e.g. the last
    BatchNorm of a residual branch feeding only the addition): there InPlace-ABN would keep the output instead of
    the input, saving nothing and costing the inversion. Which those are is found by one training forward on
    ``example_input`` (default: two zero images at 64 px). LeakyReLU pairs always pay: the activation keeps the
    output anyway. Parameters and buffers are shared, so the state_dict and an existing optimizer stay valid.
    ``model.iabn_info`` (:class:`IABNInfo`) records the backend and what was converted; undo with
    :func:`convert_from_iabn`.
    """
    params = list(model.parameters())
    resolved = resolve_backend(backend, params[0].device if params else None, precision)  # before the probe forward
    if any(_is_iabn(m) for m in model.modules()):
        raise ValueError(f"{type(model).__name__} already has InPlace-ABN layers; call convert_from_iabn(model) first")
    blocks, candidates, skipped = convertible_norms(model)
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
