"""Exports: TorchScript and ONNX files give the eager model's logits, carry their preprocessing, and fail loudly."""

from __future__ import annotations

import copy
import sys

import numpy as np
import pytest
import timm.data
import torch

from tresnet_nb.model import export
from tresnet_nb.model.export import ExportMismatchError, export_onnx, export_torchscript, load_preprocessing
from tresnet_nb.model.load import load_model

IMG = 64
CLASSES = ["cat", "dog", "bird"]
# the tests reload TorchScript files themselves; the library silences this warning around its own calls
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    """tresnet_m with 3 classes and non-trivial BN affines: timm zero-initialises each block's last BN weight, which
    would leave every residual branch out of the comparison."""
    torch.manual_seed(0)
    model = load_model("tresnet_m", weights=None, num_classes=3)
    gen = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.weight.data = 0.5 + torch.rand(module.num_features, generator=gen)
            module.running_var = 0.5 + torch.rand(module.num_features, generator=gen)
    return model.eval()


def eager_logits(model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    """Logits of a copy of ``model`` in eval mode on ``x``, as numpy."""
    with torch.no_grad():
        return copy.deepcopy(model).eval()(x).numpy()


def assert_close(out: np.ndarray, reference: np.ndarray) -> None:
    """``out`` equals ``reference`` to 1e-5 of the largest |logit| (fp32 reorderings give ~1e-7)."""
    np.testing.assert_allclose(out, reference, rtol=0, atol=1e-5 * np.abs(reference).max())


@pytest.fixture(scope="module")
def channels_last_export(model, tmp_path_factory):
    """The caller's model as training leaves it (channels_last, train mode), a copy of its state, and its
    TorchScript export made under CPU autocast, as after a mixed-precision fit."""
    trained = copy.deepcopy(model).to(memory_format=torch.channels_last).train()
    before = {k: v.clone() for k, v in trained.state_dict().items()}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        result = export_torchscript(trained, tmp_path_factory.mktemp("ts") / "model.pt", IMG, class_names=CLASSES)
    return trained, before, result


@pytest.fixture(scope="module")
def onnx_export(model, tmp_path_factory):
    """The ONNX export of ``model`` by the default (TorchScript-based) exporter."""
    pytest.importorskip("onnxruntime")
    return export_onnx(model, tmp_path_factory.mktemp("onnx") / "model.onnx", IMG, class_names=CLASSES)


def test_torchscript_round_trip_and_sidecar(model, channels_last_export):
    _, _, result = channels_last_export
    folder = result.path.parent
    assert (result.format, result.path.name, result.sidecar) == ("torchscript", "model.pt", folder / "model.pt.json")
    assert result.seconds > 0
    x = torch.rand(2, 3, IMG, IMG, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        out = torch.jit.load(str(result.path))(x)
    assert out.dtype == torch.float32  # no bf16 from the caller's autocast in the graph
    assert_close(out.numpy(), eager_logits(model, x))

    side = load_preprocessing(result.path)
    assert side == load_preprocessing(result.sidecar)
    assert (side["arch"], side["img_size"], side["num_classes"], side["class_names"]) == ("tresnet_m", IMG, 3, CLASSES)
    assert (side["mean"], side["std"]) == ([0, 0, 0], [1, 1, 1])  # TResNet takes [0, 1] pixels
    assert side["input"]["layout"] == "NCHW" and side["input"]["channels"] == "RGB"
    assert side["input_size"] == [3, IMG, IMG] and side["interpolation"] and side["crop_mode"] and side["crop_pct"]
    assert side["weights"]["source"] == "random" and side["weights"]["num_classes"] == 3
    assert side["versions"]["torch"] == torch.__version__
    assert side["max_abs_diff"] == result.max_abs_diff <= side["tolerance"]
    # a deployment can rebuild timm's eval transform from the sidecar alone
    transform = timm.data.create_transform(**{key: side[key] for key in export.TRANSFORM_KEYS})
    assert transform is not None
    assert sorted(p.name for p in folder.iterdir()) == ["model.pt", "model.pt.json"], "temporary files left behind"


def _validation_pixels(path, size: int, data_cfg: dict) -> torch.Tensor:
    """The image file at ``path`` as the project's validation loader hands it to the model: the file items (no
    draft: a PNG) and the batch transform without augmentation."""
    from tresnet_nb.data.arrays import Preprocess
    from tresnet_nb.data.base import Split
    from tresnet_nb.data.highres import FileItems

    image, _ = FileItems(Split(ids=("x",), labels=np.zeros(1, np.int64), paths=(path,)), size)[0]
    (x, _) = Preprocess(tuple(data_cfg["mean"]), tuple(data_cfg["std"]), augment=False).encodes(
        (image[None], torch.zeros(1))
    )
    return x[0]


def test_sidecar_rebuilds_the_validation_pixels_with_timm(model, channels_last_export, tmp_path):
    """A deployment feeding the sidecar to timm.data.create_transform sees the pixels validation saw: the loaders
    squish the whole image (no centre crop), so the sidecar must say crop_mode 'squash' at crop_pct 1.0."""
    from PIL import Image

    _, _, result = channels_last_export
    side = load_preprocessing(result.path)
    assert (side["crop_mode"], side["crop_pct"], side["interpolation"]) == ("squash", 1.0, "bilinear")
    # a non-square image with detail everywhere, so that a centre crop or another aspect ratio would show
    pixels = np.random.default_rng(0).integers(0, 256, (90, 150, 3), dtype=np.uint8)
    path = tmp_path / "wide.png"
    Image.fromarray(pixels).save(path)
    expected = _validation_pixels(path, IMG, side)
    cfg = {key: side[key] for key in export.TRANSFORM_KEYS}
    with Image.open(path) as img:
        deployed = timm.data.create_transform(**cfg, is_training=False)(img.convert("RGB"))
        # the record timm's pretrained cfg holds (centre crop 0.875) gives other pixels: the comparison can fail
        centre = timm.data.create_transform(**{**cfg, "crop_mode": "center", "crop_pct": 0.875}, is_training=False)(
            img.convert("RGB")
        )
    assert deployed.shape == expected.shape == (3, IMG, IMG)
    torch.testing.assert_close(deployed, expected, rtol=0, atol=1e-6)
    assert (centre - expected).abs().mean() > 0.05
    # the 21K predictions preprocess their image batch from the same record
    from tresnet_nb.heads21k.predict import image_batch

    torch.testing.assert_close(image_batch(model, [path], IMG)[0], expected, rtol=0, atol=1e-6)
    # the in-memory loaders resize with torch's antialiased bilinear, PIL's filter up to one grey level in 255
    from tresnet_nb.data.arrays import to_tensor_images

    in_memory = to_tensor_images(pixels[None], IMG)[0].float() / 255
    torch.testing.assert_close(deployed, in_memory, rtol=0, atol=1 / 255 + 1e-6)


def test_a_compiled_model_exports_from_its_original_module(model, tmp_path):
    """COMPILE=True then export: the copy that is traced must be the plain module, not torch.compile's wrapper
    (whose copy runs the compiled call, and which torch.jit.trace refuses)."""
    from torch._dynamo.eval_frame import OptimizedModule

    compiled = torch.compile(copy.deepcopy(model), backend="eager")
    assert isinstance(compiled, OptimizedModule)
    clone = export._export_copy(compiled)
    assert not any(isinstance(m, OptimizedModule) for m in clone.modules())
    assert not any("_compiled_call_impl" in vars(m) or "forward" in vars(m) for m in clone.modules())
    original = {p.data_ptr() for p in compiled.parameters()}
    assert not any(p.data_ptr() in original for p in clone.parameters()), "the copy shares the compiled weights"
    assert isinstance(compiled, OptimizedModule) and compiled._orig_mod.training == model.training  # left as found
    result = export_torchscript(compiled, tmp_path / "model.pt", IMG, class_names=CLASSES)
    x = torch.rand(2, 3, IMG, IMG, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert_close(torch.jit.load(str(result.path))(x).numpy(), eager_logits(model, x))
    assert load_preprocessing(result.path)["arch"] == "tresnet_m"


def test_an_in_place_compiled_model_exports_without_its_compiled_call(model):
    """build_learner's compile=True is nn.Module.compile(): the module keeps the compiled call on itself."""
    compiled = copy.deepcopy(model)
    compiled.compile(backend="eager")
    inner = copy.deepcopy(model)
    inner.head = torch.compile(inner.head, backend="eager")  # a submodule compiled on its own
    for source in (compiled, inner):
        clone = export._export_copy(source)
        assert all(m._compiled_call_impl is None for m in clone.modules())
        assert type(clone.head).__name__ == "ClassifierHead"
    assert compiled._compiled_call_impl is not None  # the caller's module keeps its compiled call


def test_callers_channels_last_training_model_is_left_as_it_was(channels_last_export):
    trained, before, _ = channels_last_export
    assert trained.training and all(m.training for m in trained.modules())
    conv = trained.body.conv1.conv.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert all(torch.equal(before[k], v) for k, v in trained.state_dict().items()), "BN statistics or weights moved"


def check_onnx(result, model, ort) -> None:
    """The ONNX file of ``result`` runs batches of 1 and 3 and matches ``model``; its sidecar describes it."""
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    gen = torch.Generator().manual_seed(7)
    for batch in (1, 3):
        x = torch.rand(batch, 3, IMG, IMG, generator=gen)
        (out,) = session.run(None, {"input": x.numpy()})
        assert out.shape == (batch, 3)
        assert_close(out, eager_logits(model, x))
    side = load_preprocessing(result.path)
    assert result.format == "onnx" and side["max_abs_diff"] == result.max_abs_diff <= side["tolerance"]
    assert side["class_names"] == CLASSES and (side["mean"], side["std"]) == ([0, 0, 0], [1, 1, 1])
    assert "onnxruntime" in side["versions"] and side["input"]["shape"][0] == "batch" and side["opset"] >= 17


def test_onnx_round_trip_with_dynamic_batch(model, onnx_export):
    check_onnx(onnx_export, model, pytest.importorskip("onnxruntime"))
    assert load_preprocessing(onnx_export.path)["exporter"] == "torch.onnx.export(dynamo=False)"


@pytest.mark.slow
def test_onnx_dynamo_exporter_round_trip(model, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    result = export_onnx(model, tmp_path / "model.onnx", IMG, class_names=CLASSES, dynamo=True)
    check_onnx(result, model, ort)
    assert load_preprocessing(result.path)["exporter"] == "torch.onnx.export(dynamo=True)"


class Shifted(torch.nn.Module):
    """Wraps a reloaded export and moves its logits by 0.1: a broken export that still runs."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x) + 0.1


def test_torchscript_check_catches_a_wrong_reload(model, tmp_path, monkeypatch):
    monkeypatch.setattr(export, "PROBE_BATCHES", (2,))  # one batch is enough to fail, and quicker
    real_load = torch.jit.load
    monkeypatch.setattr(torch.jit, "load", lambda *args, **kwargs: Shifted(real_load(*args, **kwargs)))
    with pytest.raises(ExportMismatchError, match=r"torchscript export differs .* max abs difference 0\.1 "):
        export_torchscript(model, tmp_path / "model.pt", IMG)
    assert list(tmp_path.iterdir()) == [], "a failed export must leave no file"


def test_onnx_check_catches_a_changed_weight(model, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    monkeypatch.setattr(export, "PROBE_BATCHES", (2,))
    real_export = torch.onnx.export

    def export_changed(module, *args, **kwargs):
        changed = copy.deepcopy(module)
        changed.head.fc.bias.data += 0.1
        return real_export(changed, *args, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", export_changed)
    with pytest.raises(ExportMismatchError, match=r"onnx export differs .* max abs difference 0\.1 "):
        export_onnx(model, tmp_path / "model.onnx", IMG)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("exporter", [export_torchscript, export_onnx])
def test_bad_img_size_raises_the_models_error(model, tmp_path, exporter):
    with pytest.raises(ValueError, match=r"Image size 102 is not a multiple of 4 .*use e\.g\. 100 or 104"):
        exporter(model, tmp_path / "model", 102)
    assert list(tmp_path.iterdir()) == []


def test_wrong_number_of_class_names_is_refused(model, tmp_path):
    with pytest.raises(ValueError, match="Got 2 class names for a model with 3 outputs"):
        export_torchscript(model, tmp_path / "model.pt", IMG, class_names=["cat", "dog"])


def test_onnx_without_onnxruntime_says_what_to_install(model, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` raise ImportError
    with pytest.raises(ImportError, match=r"needs \['onnxruntime'\].*pip install 'tresnet-nb\[export\]'"):
        export_onnx(model, tmp_path / "model.onnx", IMG)


def test_missing_sidecar_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.pt.json"):
        load_preprocessing(tmp_path / "model.pt")
