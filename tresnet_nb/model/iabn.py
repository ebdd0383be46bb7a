"""InPlace-ABN: BatchNorm + invertible activation that keeps only its output for backward.

The original TResNet trains with InPlace-ABN (Rota Bulò et al., "In-Place Activated BatchNorm for
Memory-Optimized Training of DNNs", CVPR 2018); timm rebuilt it with plain ``BatchNormAct2d`` (BatchNorm2d +
LeakyReLU or Identity). A plain pair keeps two feature maps for backward: BatchNorm keeps its input, the
(in-place) LeakyReLU its output. InPlace-ABN keeps the output only and, in backward, inverts the activation and
the affine step to recover the normalised input x̂ = (z - β) / γ, from which BatchNorm's gradient follows.

Use: ``model = convert_to_iabn(tnb.load_model("tresnet_m"))`` (:mod:`tresnet_nb.model.iabn_convert`) before training (parameters are shared, so an
optimizer built earlier keeps working); ``convert_from_iabn(model)`` gives timm's layers back, e.g. to export.

Backends:
- ``"pure"``: :class:`InPlaceABN2d`, a PyTorch autograd Function; runs on any device, dtype and memory format.
- ``"inplace_abn"``: the ``inplace_abn`` package's CUDA kernels (``pip install inplace-abn``, which compiles
  against the CUDA toolkit). It is not installable on the CPU machines this project is tested on, so that path
  is written to the package's documented API but untested here. Its CUDA kernels take fp32 and fp16, not bf16.
- ``"auto"``: the package on CUDA in fp32/fp16, the pure backend for bf16 or without the package or CUDA
  (:func:`tresnet_nb.model.iabn_convert.auto_backend`; ``convert_to_iabn(..., precision=...)`` says which).

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

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable


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
            dz,
            z,
            gamma * gamma * invstd,
            None,
            None,
            beta,
            gamma.reciprocal(),
            True,
            ctx.eps,
            [
                ctx.needs_input_grad[0],
                weight is not None and ctx.needs_input_grad[1],
                bias is not None and ctx.needs_input_grad[2],
            ],
        )
        return dx, dweight, dbias, None, None, None, None, None


class InPlaceABN2d(nn.BatchNorm2d):
    """BatchNorm2d + LeakyReLU(``activation_param``) or identity, keeping only its output for backward in training.

    Parameters and buffers are BatchNorm2d's (same state_dict keys); ``activation`` and ``activation_param`` follow
    the ``inplace_abn`` package's names. In eval mode it is BatchNorm with running statistics + the activation.
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        activation: str = "leaky_relu",
        activation_param: float = 0.01,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
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
            return InPlaceABNFunction.apply(
                x, self.weight, self.bias, running_mean, running_var, factor, self.eps, self.slope
            )
        weight = effective_weight(self.weight, self.eps) if self.weight is not None else None
        y = F.batch_norm(x, running_mean, running_var, weight, self.bias, False, 0.0, self.eps)
        return F.leaky_relu(y, self.slope, inplace=True) if self.slope != 1.0 else y

    def extra_repr(self) -> str:
        act = f"leaky_relu[{self.activation_param:g}]" if self.activation == "leaky_relu" else "identity"
        return f"{super().extra_repr()}, activation={act}"
