"""Model loading: official MIIL checkpoints, timm layouts, the HF cache, refusals and offline behaviour."""

from __future__ import annotations

import os
import time
from collections import OrderedDict

import pytest
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from tresnet_nb.model import archs
from tresnet_nb.model import weights as checkpoints
from tresnet_nb.model.load import WeightsUnavailableError, data_config, load_model, weights_info
from tresnet_nb.model.weights import UnsafeCheckpointError, write_miil_checkpoint

TRESNETS = [name for name in archs.ARCHS if name.startswith("tresnet")]
# Key counts of the official checkpoints (FACTS.md): tresnet_m 434, tresnet_v2_l 746.
OFFICIAL_KEYS = {"tresnet_m": 434, "tresnet_v2_l": 746}


def randomised(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """``model`` in eval mode with non-trivial BN statistics and affine parameters (BN weights in [0.5, 1.5])."""
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            n = module.num_features
            module.weight.data = 0.5 + torch.rand(n, generator=gen)
            module.bias.data = 0.1 * torch.randn(n, generator=gen)
            module.running_mean = 0.1 * torch.randn(n, generator=gen)
            module.running_var = 0.5 + torch.rand(n, generator=gen)
    return model.eval()


@pytest.mark.parametrize("arch", TRESNETS)
@pytest.mark.parametrize("wrapper", ["model", "state_dict"])
def test_official_miil_checkpoint_gives_reference_logits(tmp_path, arch, wrapper):
    torch.manual_seed(0)
    reference = randomised(timm.create_model(arch, num_classes=1000))
    path = write_miil_checkpoint(reference, tmp_path / f"{arch}_miil.pth", wrapper=wrapper)

    raw = torch.load(path, weights_only=True)[wrapper]
    assert "body.conv1.0.weight" in raw and "body.conv1.bn.weight" not in raw  # InplaceABN layout
    assert any(".0.0.weight" in k for k in raw)  # conv2d_ABN nested before an anti-alias layer
    assert any(k.endswith(".1.weight") and v.ndim == 1 and (v < 0).any() for k, v in raw.items())
    if arch in OFFICIAL_KEYS:
        assert len(raw) == OFFICIAL_KEYS[arch]

    model = load_model(arch, weights=path).eval()
    timm_loaded = timm.create_model(arch, pretrained=True, pretrained_cfg_overlay=dict(file=str(path))).eval()
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours, ref, timms = model(x), reference(x), timm_loaded(x)
    assert torch.allclose(ours, ref, atol=1e-5, rtol=0), (ours - ref).abs().max()
    assert torch.allclose(ours, timms, atol=1e-5, rtol=0)
    info = weights_info(model)
    assert (info.pretrained, info.source, info.head, info.num_classes) == (True, "file", "pretrained", 1000)


def test_forgetting_the_inplace_abn_weight_conversion_changes_logits():
    """The oracle above can fail: loading the MIIL weights as stored (without |w| + eps) gives other logits."""
    reference = randomised(timm.create_model("tresnet_m", num_classes=10))
    raw = checkpoints.to_miil_layout(reference)
    naive = timm.create_model("tresnet_m", num_classes=10).eval()
    naive.load_state_dict({k: raw[checkpoints._miil_name(reference, k)] for k in reference.state_dict()})
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert (naive(x) - reference(x)).abs().max() > 1e-3


# ---- the official layout written independently: the Alibaba-MIIL TResNet rebuilt from its source ------------------
# src/models/tresnet/tresnet.py and layers/ of Alibaba-MIIL/TResNet (aea5f0f), with InPlaceABN's eval-mode arithmetic
# from mapillary/inplace_abn (src/inplace_abn_cpu.cpp forward_cpu). Its state_dict is an official checkpoint by
# construction; nothing here uses the project's (or timm's) mapping between the two layouts.


class OfficialIABN(torch.nn.Module):
    """inplace_abn.InPlaceABN: its state (ABN's parameters and buffers) and eval forward act(x̂·(|w| + eps) + b)."""

    def __init__(self, n: int, activation: str = "leaky_relu", param: float = 1e-2) -> None:
        super().__init__()
        self.weight, self.bias = torch.nn.Parameter(torch.ones(n)), torch.nn.Parameter(torch.zeros(n))
        self.register_buffer("running_mean", torch.zeros(n))
        self.register_buffer("running_var", torch.ones(n))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))
        self.activation, self.param = activation, param

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = (self.weight.abs() + 1e-5) * (self.running_var + 1e-5).rsqrt()
        y = x * scale.view(1, -1, 1, 1) + (self.bias - self.running_mean * scale).view(1, -1, 1, 1)
        return F.leaky_relu(y, self.param) if self.activation == "leaky_relu" else y


def conv2d_abn(ni: int, nf: int, kernel_size: int = 3, activation: str = "leaky_relu", param: float = 1e-2):
    """The official conv2d_ABN (stride 1: every stride-2 conv of TResNet-M is followed by the anti-alias layer)."""
    conv = torch.nn.Conv2d(ni, nf, kernel_size, 1, kernel_size // 2, bias=False)
    return torch.nn.Sequential(conv, OfficialIABN(nf, activation, param))


class OfficialAntiAlias(torch.nn.Module):
    """AntiAliasDownsampleLayer with DownsampleJIT (a scripted class: nothing in the state_dict)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.tensor([1.0, 2.0, 1.0])
        filt = (a[:, None] * a[None, :]) / (a[:, None] * a[None, :]).sum()
        weight = filt[None, None].repeat(x.shape[1], 1, 1, 1)
        return F.conv2d(F.pad(x, (1, 1, 1, 1), "reflect"), weight, stride=2, groups=x.shape[1])


class OfficialSE(torch.nn.Module):
    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = torch.nn.Conv2d(channels, reduced, 1), torch.nn.Conv2d(reduced, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean((2, 3), keepdim=True)))))


class OfficialBlock(torch.nn.Module):
    """BasicBlock (``bottleneck`` False) or Bottleneck of the official TResNet."""

    def __init__(self, bottleneck: bool, inplanes: int, planes: int, stride: int, downsample, use_se: bool) -> None:
        super().__init__()
        self.bottleneck, self.downsample = bottleneck, downsample
        first = conv2d_abn(planes if bottleneck else inplanes, planes, 3, param=1e-3)
        strided = torch.nn.Sequential(first, OfficialAntiAlias()) if stride == 2 else first
        if bottleneck:
            self.conv1, self.conv2 = conv2d_abn(inplanes, planes, 1, param=1e-3), strided
            self.conv3 = conv2d_abn(planes, planes * 4, 1, "identity")
            self.se = OfficialSE(planes, max(planes * 4 // 8, 64)) if use_se else None
        else:
            self.conv1, self.conv2 = strided, conv2d_abn(planes, planes, 3, "identity")
            self.se = OfficialSE(planes, max(planes // 4, 64)) if use_se else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.conv2(self.conv1(x))
        out = out if self.se is None else self.se(out)
        out = self.conv3(out) if self.bottleneck else out
        return F.relu(out + residual)


class OfficialSpaceToDepth(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        x = x.view(n, c, h // 4, 4, w // 4, 4).permute(0, 3, 5, 1, 2, 4).contiguous()
        return x.view(n, c * 16, h // 4, w // 4)


class OfficialTResNet(torch.nn.Module):
    """The official TResNet (width 1: TResNet-M with layers [3, 4, 11, 3])."""

    def __init__(self, layers=(3, 4, 11, 3), num_classes: int = 1000) -> None:
        super().__init__()
        body = OrderedDict([("SpaceToDepth", OfficialSpaceToDepth()), ("conv1", conv2d_abn(48, 64, 3))])
        inplanes = 64
        for i, blocks in enumerate(layers):
            planes, bottleneck, stride = 64 * 2**i, i >= 2, 1 if i == 0 else 2
            width = planes * (4 if bottleneck else 1)
            downsample = None
            if stride != 1 or inplanes != width:
                pool = [torch.nn.AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False)] if stride == 2 else []
                downsample = torch.nn.Sequential(*pool, conv2d_abn(inplanes, width, 1, "identity"))
            stage = [OfficialBlock(bottleneck, inplanes, planes, stride, downsample, use_se=i < 3)]
            stage += [OfficialBlock(bottleneck, width, planes, 1, None, use_se=i < 3) for _ in range(1, blocks)]
            body[f"layer{i + 1}"], inplanes = torch.nn.Sequential(*stage), width
        self.body = torch.nn.Sequential(body)
        self.head = torch.nn.Sequential(OrderedDict([("fc", torch.nn.Linear(inplanes, num_classes))]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).flatten(2).mean(2))


def test_official_checkpoint_written_independently_loads_to_the_official_logits(tmp_path):
    torch.manual_seed(0)
    official = OfficialTResNet(num_classes=10).eval()
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for module in official.modules():
            if isinstance(module, OfficialIABN):  # signed weights: InPlaceABN computes with |w| + eps
                n = module.weight.numel()
                sign = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
                module.weight.copy_(sign * (0.5 + torch.rand(n, generator=gen)))
                module.bias.copy_(0.1 * torch.randn(n, generator=gen))
                module.running_mean.copy_(0.1 * torch.randn(n, generator=gen))
                module.running_var.copy_(0.5 + torch.rand(n, generator=gen))
    state = official.state_dict()
    assert len(state) == OFFICIAL_KEYS["tresnet_m"]
    assert {
        "body.conv1.0.weight",
        "body.conv1.1.weight",
        "body.layer2.0.conv1.0.0.weight",
        "body.layer2.0.downsample.1.1.running_var",
        "body.layer3.0.conv2.0.1.bias",
        "head.fc.weight",
    } <= set(state)
    path = tmp_path / "official_tresnet_m.pth"
    torch.save({"model": state}, path)
    model = load_model("tresnet_m", weights=path).eval()
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours, theirs = model(x), official(x)
    assert theirs.abs().max() > 1e-3 and theirs.std() > 1e-3  # logits that tell weights apart
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5 * theirs.abs().max().item())
    assert weights_info(model).num_classes == 10


def test_timm_layout_safetensors_round_trip_keeps_the_head(tmp_path):
    model = randomised(load_model("tresnet_m", weights=None, num_classes=7))
    path = tmp_path / "finetuned.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    loaded = load_model("tresnet_m", weights=path).eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), atol=1e-5, rtol=0)
    assert weights_info(loaded).num_classes == 7 and weights_info(loaded).head == "pretrained"
    replaced = load_model("tresnet_m", weights=path, num_classes=3)
    assert replaced.num_classes == 3 and weights_info(replaced).head == "new"


def test_malicious_pickle_is_refused_and_its_payload_never_runs(tmp_path):
    marker = tmp_path / "payload-ran"

    class Payload:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    path = tmp_path / "evil.pth"
    torch.save({"model": {"head.fc.weight": torch.zeros(2, 2)}, "extra": Payload()}, path)
    with pytest.raises(UnsafeCheckpointError, match="not executed") as err:
        load_model("tresnet_m", weights=path)
    assert str(path) in str(err.value)
    assert not marker.exists()
    # control: the file really carries a payload that a plain unpickle runs
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_key_mismatch_names_the_keys(tmp_path):
    state = timm.create_model("tresnet_m", num_classes=10).state_dict()
    del state["body.layer1.0.se.fc1.bias"]
    state["body.extra.weight"] = torch.zeros(3)
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(KeyError) as err:
        load_model("tresnet_m", weights=path)
    message = str(err.value)
    assert "body.layer1.0.se.fc1.bias" in message and "body.extra.weight" in message


def test_wrong_architecture_names_the_keys(tmp_path):
    path = tmp_path / "m.pth"
    torch.save(timm.create_model("tresnet_m", num_classes=10).state_dict(), path)
    with pytest.raises(KeyError, match=r"body\.layer1\.3\.conv1\.conv\.weight"):
        load_model("tresnet_l", weights=path)


@pytest.mark.parametrize("offline_flag", [False, True])
def test_pretrained_tag_offline_fails_fast_with_the_fix(closed_hub, monkeypatch, offline_flag):
    if offline_flag:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(WeightsUnavailableError) as err:
        load_model("tresnet_m", weights="miil_in21k")
    assert time.perf_counter() - start < 2.0
    message = str(err.value)
    assert "timm/tresnet_m.miil_in21k" in message and "model.safetensors" in message and str(closed_hub) in message
    assert "-p WEIGHTS /path/to/file" in message and "-p WEIGHTS none" in message


def test_auto_falls_back_to_random_and_says_so(closed_hub):
    with pytest.warns(UserWarning, match="RANDOM initialisation"):
        model = load_model("tresnet_m", weights="auto", num_classes=10)
    info = weights_info(model)
    assert (info.pretrained, info.source, info.head, info.num_classes) == (False, "random", "random", 10)
    assert "cannot be reached" in info.note


def _put_in_hf_cache(cache, repo: str, model: torch.nn.Module) -> None:
    folder = cache / f"models--{repo.replace('/', '--')}"
    revision = "0" * 40
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(revision)
    snapshot = folder / "snapshots" / revision
    snapshot.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(snapshot / "model.safetensors"))


@pytest.mark.parametrize(
    ("tag", "classes", "size", "crop"), [("miil_in21k", 11221, 224, "squash"), ("miil_in1k_448", 1000, 448, "squash")]
)
def test_tag_loads_from_the_hf_cache_offline(closed_hub, tag, classes, size, crop):
    reference = randomised(timm.create_model("tresnet_m", num_classes=classes))
    _put_in_hf_cache(closed_hub, f"timm/tresnet_m.{tag}", reference)
    model = load_model(f"tresnet_m.{tag}", weights="auto").eval()
    info = weights_info(model)
    assert (info.pretrained, info.source, info.tag, info.num_classes, info.head) == (
        True,
        "hf-cache",
        tag,
        classes,
        "pretrained",
    )
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model(x), reference(x), atol=1e-5, rtol=0)
    cfg = data_config(model)
    # the loaders squish the whole image, whatever the tag's cfg says (timm: centre crop 0.875)
    assert cfg["input_size"] == (3, size, size) and (cfg["crop_mode"], cfg["crop_pct"]) == (crop, 1.0)
    assert cfg["mean"] == (0.0, 0.0, 0.0) and cfg["std"] == (1.0, 1.0, 1.0)  # TResNet: raw [0, 1] pixels
    transfer = load_model("tresnet_m", weights=tag, num_classes=5)
    assert weights_info(transfer).head == "new" and transfer.num_classes == 5


@pytest.mark.parametrize("size", [0, 28, 31, 66, 225])
def test_image_size_must_be_a_multiple_of_4_of_at_least_32(size):
    with pytest.raises(ValueError, match=f"Image size {size} is not a multiple of 4 of at least 32"):
        archs.check_img_size(size)


def test_sizes_off_the_32_grid_such_as_the_papers_368_run():
    model = load_model("tresnet_m", "none", num_classes=3).eval()
    for size in (100, 368):
        assert archs.check_img_size(size) == size
    with torch.no_grad():
        assert model(torch.rand(1, 3, 100, 100)).shape == (1, 3)
    with pytest.raises(RuntimeError):  # what the check prevents: the stem cannot fold a side of 66
        with torch.no_grad():
            model(torch.rand(1, 3, 66, 66))


@pytest.mark.parametrize("arch", ["tresnet_s", "tresnet_m.nope", "vit_base"])
def test_unknown_architecture_or_tag_is_refused(arch):
    with pytest.raises(ValueError, match="Unknown"):
        load_model(arch, weights=None)


def test_missing_file_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model("tresnet_m", weights=str(tmp_path / "nothere.pth"))


@pytest.mark.parametrize("arch", list(archs.ARCHS))
def test_every_architecture_builds_at_random_with_its_preprocessing(arch):
    model = load_model(arch, weights=None, num_classes=4)
    assert model.num_classes == 4 and not weights_info(model).pretrained
    cfg = data_config(model, 64)
    assert cfg["input_size"] == (3, 64, 64)
    if arch.startswith("tresnet"):
        assert cfg["mean"] == (0.0, 0.0, 0.0) and cfg["std"] == (1.0, 1.0, 1.0)
    else:
        assert cfg["mean"] != (0.0, 0.0, 0.0)
