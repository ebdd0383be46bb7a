"""RunConfig: presets fill, explicit parameters win, validation names the bad value, JSON round-trip."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tresnet_nb.config import DEFAULTS, PRESETS, RunConfig, config_key, default_output_dir
from tresnet_nb.data import DatasetError
from tresnet_nb.options import TrainOptions


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


def test_default_output_dir_is_runs_of_the_notebook_keyed_by_the_configuration():
    cfg = RunConfig.from_params("00_quickstart", preset="smoke")
    assert cfg.output_dir.endswith(f"runs/00_quickstart/{cfg.key}") and len(cfg.key) == 8 and cfg.default_dir
    assert RunConfig.from_params("00_quickstart", preset="smoke").output_dir == cfg.output_dir  # unchanged: resumes
    changed = RunConfig.from_params("00_quickstart", preset="smoke", epochs=2)
    assert changed.output_dir != cfg.output_dir and changed.default_dir  # changed: a folder of its own
    picked = cfg.with_changes(arch="tresnet_l")  # a ConfigPicker choice
    assert picked.output_dir == str(default_output_dir("00_quickstart", picked.key)) != cfg.output_dir
    given = RunConfig.from_params("00_quickstart", preset="smoke", output_dir="/tmp/x")
    assert given.output_dir == given.with_changes(arch="tresnet_l").output_dir == "/tmp/x"  # given: kept
    assert not given.default_dir


def test_config_key_is_the_config_part_of_the_fit_fingerprint():
    import json

    from tresnet_nb.train.fit import fingerprint

    cfg = RunConfig.from_params("nb", preset="smoke", output_dir="/tmp/x")
    config = json.loads(fingerprint(cfg, [], "scratch"))["config"]
    assert config_key({**config, "output_dir": "/elsewhere"}) == cfg.key == cfg.with_changes(output_dir="/y").key


def test_smoke_without_data_root_runs_on_a_marked_fixture(tmp_path, monkeypatch, capsys):
    from tresnet_nb.data import get_dataset
    from tresnet_nb.data.fixtures import is_fixture

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)  # read TMPDIR again
    cfg = RunConfig.from_params("04_oxford_flowers", preset="smoke", dataset="flowers102", output_dir="/tmp/x")
    assert cfg.data_root.startswith(str(tmp_path)) and is_fixture(cfg.data_root)
    assert "DATA_ROOT is not set: PRESET 'smoke' runs on a generated flowers102 fixture" in capsys.readouterr().out
    assert len(get_dataset("flowers102").read(cfg.data_root)["train"]) > 0  # the official format, readable
    again = RunConfig.from_params("04_oxford_flowers", preset="smoke", dataset="flowers102", output_dir="/tmp/x")
    assert again.data_root == cfg.data_root  # written once: the configuration (and its run folder) stays the same
    with pytest.raises(DatasetError, match="DATA_ROOT is not set"):  # other presets: DATA_ROOT is needed
        get_dataset("flowers102").read(RunConfig.from_params("nb", dataset="flowers102", output_dir="/x").data_root)
    assert not is_fixture(None) and not is_fixture(tmp_path / "elsewhere")


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"preset": "fast"}, "Unknown preset 'fast'"),
        ({"preset": "smok"}, r"Unknown preset 'smok' \(did you mean 'smoke'\?\); choose one of"),
        ({"epoch": 3}, r"Unknown parameters 'EPOCH' \(did you mean 'EPOCHS'\?\)"),
        ({"img_size": 102}, "Image size 102 is not a multiple of 4"),
        ({"img_size": "224"}, "IMG_SIZE must be an integer, not '224'"),
        ({"batch_size": 0}, "BATCH_SIZE must be at least 1, not 0"),
        ({"epochs": 1.5}, "EPOCHS must be an integer"),
        ({"lr": -1.0}, "LR must be a positive number"),
        ({"precision": "fp8"}, "Unknown precision 'fp8'"),
        ({"dataset": "mnist"}, "Unknown dataset 'mnist'"),
        ({"arch": "tresnet_s"}, "Unknown architecture 'tresnet_s'"),
        ({"max_items": 0}, "MAX_ITEMS must be at least 1"),
        ({"colour": "red"}, r"Unknown parameters 'COLOUR'; RunConfig takes"),
    ],
)
def test_bad_values_are_refused_with_the_value_and_the_choices(params, message):
    with pytest.raises(ValueError, match=message):
        RunConfig.from_params("nb", **{"preset": "smoke", "output_dir": "/tmp/x", **params})


def test_json_round_trip(tmp_path):
    cfg = RunConfig.from_params(
        "nb",
        preset="cpu",
        lr=3e-4,
        output_dir=str(tmp_path),
        notebook_params={"note": "x"},
        recipe="miil",
        progressive="32:1:8,64:2:4",
        tta=True,
    )
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


def test_from_notebook_reads_the_parameters_and_options_it_knows_and_leaves_the_rest():
    namespace = {"PRESET": "smoke", "ARCH": None, "EPOCHS": 2, "TRACKING": "runs/mlflow", "OUTPUT_DIR": "/tmp/x",
                 "RECIPE": "miil", "TTA": True, "PROGRESSIVE": "32:1:8", "INTERACTIVE": None, "In": [], "RUN_DIR": "r",
                 "TOP_K": 5}  # fmt: skip
    cfg = RunConfig.from_notebook("nb", namespace)
    assert (cfg.preset, cfg.arch, cfg.epochs, cfg.tracking) == ("smoke", "tresnet_m", 2, "runs/mlflow")
    assert (cfg.options.recipe, cfg.options.tta, cfg.options.progressive[0].size) == ("miil", True, 32)
    assert cfg.notebook_params == {}
    own = RunConfig.from_notebook("nb", namespace, own=("TOP_K",))
    assert own.notebook_params == {"top_k": 5} and own.key != cfg.key  # the notebook's own parameter keys the run
    with pytest.raises(ValueError, match=r"\['SENSES'\] are not defined"):
        RunConfig.from_notebook("nb", namespace, own=("SENSES",))


def test_training_options_are_checked_on_creation_and_travel_with_the_config():
    with pytest.raises(ValueError, match="MIXUP must be a Beta alpha"):
        RunConfig.from_params("nb", preset="smoke", output_dir="/tmp/x", mixup=-1)
    with pytest.raises(ValueError, match="Unknown recipe 'adam'"):
        RunConfig.from_params("nb", preset="smoke", output_dir="/tmp/x", RECIPE="adam")
    with pytest.raises(ValueError, match="GRAD_CHECKPOINTING and COMPILE cannot be combined"):
        TrainOptions(grad_checkpointing=True, compile=True)
    with pytest.raises(ValueError, match="either as options= or as parameters"):
        RunConfig.from_params("nb", options=TrainOptions(), tta=True)
    cfg = RunConfig.from_params("nb", preset="smoke", output_dir="/tmp/x")
    changed = cfg.with_changes(tta=True, epochs=3)
    assert changed.options == replace(cfg.options, tta=True) and changed.epochs == 3 and cfg.options.tta is False
    assert changed.key != cfg.key  # an option is part of the configuration


def test_did_you_mean_names_the_close_choices_in_their_own_spelling_and_nothing_else():
    from tresnet_nb.hints import did_you_mean, unknown_names

    assert did_you_mean("fashion_mnst", ["fashion_mnist", "cifar10"]) == " (did you mean 'fashion_mnist'?)"
    assert did_you_mean("cifar", ["cifar10", "cifar100", "folder"]) == " (did you mean 'cifar10' or 'cifar100'?)"
    assert did_you_mean("lr", ["LR", "EPOCHS"]) == " (did you mean 'LR'?)"  # case ignored, the choice's case given
    assert did_you_mean("imagenet", ["cifar10", "folder"]) == ""
    assert unknown_names(["EPOCS", "ZZZ"], ["EPOCHS", "LR"]) == "'EPOCS' (did you mean 'EPOCHS'?), 'ZZZ'"


def test_the_packages_warnings_are_shown_once_each_on_one_line():
    import uuid
    import warnings

    from tresnet_nb.hints import TnbWarning, install, short_format, warn

    assert short_format("x", TnbWarning, "f.py", 3, "warn(x)") == "Warning: x\n"  # no file, line or source line
    assert "f.py:3: UserWarning: x" in short_format("x", UserWarning, "f.py", 3, "warn(x)")  # others as Python's
    first, second = (f"weights {uuid.uuid4().hex} unavailable" for _ in range(2))
    with warnings.catch_warnings(record=True) as shown:
        warnings.resetwarnings()
        install()
        assert warnings.formatwarning is short_format
        for message in (first, first, second, first):
            warn(message, stacklevel=2)
    assert [str(w.message) for w in shown] == [first, second]
