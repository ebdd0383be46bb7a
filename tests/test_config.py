"""RunConfig: presets fill, explicit parameters win, validation names the bad value, JSON round-trip."""

from __future__ import annotations

import pytest

from tresnet_nb.config import DEFAULTS, PRESETS, RunConfig


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_preset_fills_what_the_call_left_unset(preset):
    cfg = RunConfig.from_params("nb", preset=preset, output_dir="/tmp/x")
    for key, value in PRESETS[preset].items():
        assert getattr(cfg, key) == value
    for key in set(DEFAULTS) - set(PRESETS[preset]) - {"output_dir"}:
        assert getattr(cfg, key) == DEFAULTS[key]


def test_explicit_parameters_win_over_the_preset():
    cfg = RunConfig.from_params("nb", preset="smoke", IMG_SIZE=96, EPOCHS=3, WEIGHTS="auto", output_dir="/tmp/x")
    assert (cfg.img_size, cfg.epochs, cfg.weights, cfg.batch_size) == (96, 3, "auto", PRESETS["smoke"]["batch_size"])


def test_default_output_dir_is_runs_of_the_notebook():
    cfg = RunConfig.from_params("00_quickstart", preset="smoke")
    assert cfg.output_dir.endswith("runs/00_quickstart")


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"preset": "fast"}, "Unknown preset 'fast'"),
        ({"img_size": 102}, "Image size 102 is not a multiple of 4"),
        ({"img_size": "224"}, "IMG_SIZE must be an integer, not '224'"),
        ({"batch_size": 0}, "BATCH_SIZE must be at least 1, not 0"),
        ({"epochs": 1.5}, "EPOCHS must be an integer"),
        ({"lr": -1.0}, "LR must be a positive number"),
        ({"precision": "fp8"}, "Unknown precision 'fp8'"),
        ({"dataset": "mnist"}, "Unknown dataset 'mnist'"),
        ({"arch": "tresnet_s"}, "Unknown architecture 'tresnet_s'"),
        ({"max_items": 0}, "MAX_ITEMS must be at least 1"),
        ({"colour": "red"}, r"Unknown parameters \['colour'\]"),
    ],
)
def test_bad_values_are_refused_with_the_value_and_the_choices(params, message):
    with pytest.raises(ValueError, match=message):
        RunConfig.from_params("nb", **{"preset": "smoke", "output_dir": "/tmp/x", **params})


def test_json_round_trip(tmp_path):
    cfg = RunConfig.from_params("nb", preset="cpu", lr=3e-4, output_dir=str(tmp_path), extra={"note": "x"})
    path = cfg.save()
    assert path == tmp_path / "run_config.json"
    assert RunConfig.load(path) == cfg


def test_integer_lr_is_accepted_as_float():
    assert RunConfig.from_params("nb", preset="smoke", lr=1, output_dir="/tmp/x").lr == 1.0


def test_config_is_frozen():
    cfg = RunConfig.from_params("nb", preset="smoke", output_dir="/tmp/x")
    with pytest.raises(AttributeError):
        cfg.epochs = 9  # type: ignore[misc]


def test_the_paper_preset_takes_the_datasets_paper_architecture_and_size():
    cars = RunConfig.from_params("n", preset="paper", dataset="stanford_cars")
    assert (cars.arch, cars.img_size) == ("tresnet_l", 368)
    mine = RunConfig.from_params("n", preset="paper", dataset="stanford_cars", arch="tresnet_m", img_size=448)
    assert (mine.arch, mine.img_size) == ("tresnet_m", 448)  # what the call sets wins
    assert RunConfig.from_params("n", preset="cpu", dataset="stanford_cars").img_size == PRESETS["cpu"]["img_size"]
    assert RunConfig.from_params("n", preset="paper", dataset="fashion_mnist").img_size == 224
