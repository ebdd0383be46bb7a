"""Publishing a run in the Hugging Face / timm layout: timm's own ``local-dir:`` loader and ``tnb.load_model`` give back
the run's model exactly (logits equal), with the preprocessing it trained with; the card names the score; a bad
run folder and an unreachable hub are refused at once with the fix."""

from __future__ import annotations

import time

import pytest
import timm
import timm.data
import torch

import tresnet_nb as tnb
from tresnet_nb.__main__ import main
from tresnet_nb.files import atomic_write_text
from tresnet_nb.report.publish import PublishError, publish, publish_hint

CLASSES = ["cat", "dog", "bird"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished run folder as a notebook leaves it (run_config.json, metrics.json, model.safetensors) and the
    model it saved; every weight and BatchNorm statistic perturbed, so that no part of the model is at its init."""
    out = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    model = tnb.load_model("tresnet_m", "none", num_classes=len(CLASSES))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.normal_(0, 0.1)
            elif name.endswith("running_var"):
                b.uniform_(0.5, 1.5)
    cfg = tnb.RunConfig.from_params("00_quickstart", preset="smoke", output_dir=str(out), img_size=96)
    cfg.save()
    tnb.save_weights(model, out / "model.safetensors")
    record = tnb.build_metrics(
        cfg,
        tnb.weights_info(model),
        "accuracy",
        0.8765,
        12.0,
        class_names=CLASSES,
        recipe="scratch",
        lr=3e-3,
        precision="fp32",
        temperature=1.25,
    )
    tnb.write_metrics(record, out / "metrics.json")
    return out, model.eval()


def test_the_published_folder_loads_in_timm_and_tnb_with_the_runs_exact_logits(run, tmp_path):
    out, model = run
    assert main(["publish", str(out), "--to", str(tmp_path / "pub")]) == 0
    x = torch.rand(2, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(x)
        from_timm = timm.create_model(f"local-dir:{tmp_path / 'pub'}", pretrained=True).eval()(x)
        from_tnb = tnb.load_model("tresnet_m", tmp_path / "pub" / "model.safetensors").eval()(x)
    assert expected.std() > 0.01  # not a degenerate head: equal logits mean equal models
    assert torch.equal(from_timm, expected) and torch.equal(from_tnb, expected)


def test_config_holds_labels_and_the_preprocessing_as_trained_and_the_card_the_score(run, tmp_path):
    out, _ = run
    folder = publish(out, str(tmp_path / "pub"))
    model = timm.create_model(f"local-dir:{folder}", pretrained=True)
    assert model.pretrained_cfg["label_names"] == CLASSES
    data = timm.data.resolve_data_config(model=model)
    assert tuple(data["input_size"]) == (3, 96, 96)
    assert tuple(data["mean"]) == (0.0, 0.0, 0.0) and tuple(data["std"]) == (1.0, 1.0, 1.0)
    assert (data["crop_pct"], data["crop_mode"], data["interpolation"]) == (1.0, "squash", "bilinear")
    card = (tmp_path / "pub" / "README.md").read_text()
    assert "accuracy = 0.8765" in card and "1.2500" in card  # the score and the calibration temperature
    assert "random initialisation" in card and "library_name: timm" in card
    assert publish_hint(out) == f"python -m tresnet_nb publish {out} --to {out / 'published'}"


def test_a_folder_that_is_not_a_finished_run_is_refused_naming_what_it_lacks(tmp_path, capsys):
    assert main(["publish", str(tmp_path), "--to", str(tmp_path / "pub")]) == 2
    err = capsys.readouterr().err
    assert "lacks ['run_config.json', 'metrics.json', 'model.safetensors']" in err
    assert not (tmp_path / "pub").exists()


def test_uploading_without_a_reachable_hub_fails_fast_with_the_fix(run, closed_hub):
    out, _ = run
    start = time.perf_counter()
    with pytest.raises(PublishError, match=r"cannot be reached .* --to DIR\) and upload that folder"):
        publish(out, "hf-hub:someone/tresnet-test")
    assert time.perf_counter() - start < 3.0
    with pytest.raises(PublishError, match="write it as hf-hub:USER/REPO"):
        publish(out, "hf-hub:no-slash")


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640)], ids=["umask-022", "umask-027"])
def test_a_run_and_its_published_folder_get_the_mode_the_umask_gives_new_files(run, tmp_path, umask, mode):
    """What a run writes (the weights, metrics.json, run_config.json) and what publish writes are readable by whoever
    the umask lets read new files: a teammate on a shared server, under the usual 0o022."""
    import os
    import stat

    out, model = run
    before = os.umask(umask)
    try:
        target = tmp_path / "run"
        tnb.save_weights(model, target / "model.safetensors")
        atomic_write_text(target / "notes.txt", "written by the library\n")
        assert main(["publish", str(out), "--to", str(tmp_path / "pub")]) == 0
    finally:
        os.umask(before)
    written = [*target.iterdir(), *(tmp_path / "pub").iterdir()]
    assert {p.name for p in written} >= {"model.safetensors", "notes.txt", "README.md", "config.json"}
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in written} == {p.name: mode for p in written}
