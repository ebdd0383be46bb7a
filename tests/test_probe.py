"""The throughput probe on CPU with tiny sizes: timing arithmetic, the out-of-memory back-off and the paper's 90%
rule, memory and FLOP counts, the report's table/JSON/CSV, and the command line."""

from __future__ import annotations

import csv
import inspect
import json

import pytest
import torch
from torch import nn

from tresnet_nb import probe
from tresnet_nb.__main__ import main
from tresnet_nb.report.record import write_metrics
from tresnet_nb.runtime import cpu_precision

CPU = torch.device("cpu")


def tiny_net(num_classes: int = 1000) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, num_classes),
    )


class OutOfMemoryAbove(nn.Module):
    """A small net whose forward raises CUDA's out-of-memory error for batches above ``limit`` (as a GPU would)."""

    def __init__(self, limit: int, error: type[BaseException] = torch.OutOfMemoryError, message: str = "") -> None:
        super().__init__()
        self.net, self.limit, self.error, self.message = tiny_net(), limit, error, message
        self.batches: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(x.shape[0])
        if x.shape[0] > self.limit:
            raise self.error(self.message or f"CUDA out of memory. Tried to allocate {x.shape[0]} GiB")
        return self.net(x)


def test_timing_is_consistent():
    calls = []
    timing = probe.time_steps(lambda: calls.append(1), batch_size=8, device=CPU, warmup=2, repeats=3, steps=4)
    assert len(calls) == 2 + 3 * 4 and len(timing.seconds) == 3 and all(s > 0 for s in timing.seconds)
    assert timing.images_per_second == pytest.approx(8 / timing.median_s)
    assert timing.ms_per_step == pytest.approx(1000 * timing.median_s)
    fixed = probe.Timing(10, (0.1, 0.2, 0.4), 1)
    assert fixed.images_per_second == pytest.approx(50.0) and fixed.spread == pytest.approx(1.5)
    with pytest.raises(ValueError, match="repeats"):
        probe.time_steps(lambda: None, 1, CPU, repeats=0)


@pytest.mark.parametrize(("largest", "measured"), [(512, 460), (288, 259), (10, 9), (1, 1)])
def test_the_paper_measures_at_90_percent_of_the_maximal_batch(largest, measured):
    assert probe.paper_batch(largest) == measured
    with pytest.raises(ValueError, match="at least 1"):
        probe.paper_batch(0)


def test_max_batch_search_backs_off_on_out_of_memory_and_restores_batchnorm():
    model = OutOfMemoryAbove(37)
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    found = probe.search_max_batch(model, "train", 16, CPU, limit=1024)
    assert (found.largest, found.capped, found.shown) == (37, False, "37")
    assert max(model.batches) > 37  # it did try (and back off from) larger batches
    after = {k: v for k, v in model.state_dict().items() if "running" in k}
    assert all(torch.equal(before[k], after[k]) for k in before)
    model = OutOfMemoryAbove(100)
    assert probe.search_max_batch(model, "infer", 16, CPU, limit=1024).largest == 100


CUBLAS_ALLOC = "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"


@pytest.mark.parametrize("mode", ["train", "infer"])
def test_max_batch_search_treats_cublas_allocation_failures_as_out_of_memory(mode):
    model = OutOfMemoryAbove(37, RuntimeError, CUBLAS_ALLOC)
    found = probe.search_max_batch(model, mode, 16, CPU, limit=1024)
    assert (found.largest, found.smallest_failing, found.capped) == (37, 38, False)


def test_a_search_that_never_fails_reports_its_cap_as_a_lower_bound():
    found = probe.search_max_batch(OutOfMemoryAbove(10**9), "infer", 16, CPU, limit=64)
    assert (found.largest, found.smallest_failing, found.capped, found.shown) == (64, None, True, ">= 64")
    default_cap = inspect.signature(probe.search_max_batch).parameters["limit"].default
    assert default_cap >= 2**16  # far above the old 4096, which inference at 224 px reaches on an H100/H200


def test_capped_search_shows_at_least_n_in_the_table_details_and_json(monkeypatch, tmp_path):
    from functools import partial

    from tresnet_nb.probe import measure

    monkeypatch.setattr(measure, "search_max_batch", partial(probe.search_max_batch, limit=64))
    settings = probe.ProbeSettings(("tresnet_m",), img_size=32, batch_size="max", warmup=0, repeats=1, flops=False)
    capped = probe.probe_model(OutOfMemoryAbove(10**9), "tresnet_m", settings, CPU, search=True)
    assert (capped.max_train_batch, capped.max_train_batch_capped, capped.max_infer_batch_capped) == (64, True, True)
    assert capped.train.batch_size == 57 and "reached its cap: train >= 64, infer >= 64" in capped.batch_note
    measured = probe.probe_model(OutOfMemoryAbove(37), "resnet50", settings, CPU, search=True)
    report = probe.ProbeReport(settings, "cuda:0 (stand-in)", {"versions": {}}, 2**30, None, [capped, measured])
    table = report.table()
    assert list(table[probe.TABLE_COLUMNS[2]]) == [">= 64", "37"]
    details = report.details()
    assert details.loc["tresnet_m", "max infer batch"] == ">= 64" and details.loc["resnet50", "max train batch"] == "37"
    rows = json.loads(report.to_json(tmp_path / "probe.json").read_text())["results"]
    assert (rows[0]["max_train_batch"], rows[0]["max_train_batch_capped"], rows[0]["max_train_batch_shown"]) == (
        64,
        True,
        ">= 64",
    )
    assert (rows[1]["max_infer_batch_shown"], rows[1]["max_infer_batch_capped"]) == ("37", False)


def test_other_cuda_errors_are_not_retried():
    model = OutOfMemoryAbove(3, RuntimeError, "CUDA error: an illegal memory access was encountered")
    with pytest.raises(RuntimeError, match="illegal memory access"):
        probe.search_max_batch(model, "train", 16, CPU, start=8)
    assert model.batches == [8]  # one try, then the error, untouched


def test_probe_with_max_batch_measures_at_90_percent_of_the_largest():
    model = OutOfMemoryAbove(37)
    settings = probe.ProbeSettings(("tresnet_m",), img_size=32, batch_size="max", warmup=1, repeats=2)
    result = probe.probe_model(model, "tresnet_m", settings, CPU, search=True)
    assert result.max_train_batch == 37 and result.max_infer_batch == 37
    assert result.train.batch_size == result.infer.batch_size == 33
    assert result.batch_note == "90% of the maximal batch"


def test_probe_without_a_memory_limit_uses_a_fixed_batch_and_an_estimate():
    settings = probe.ProbeSettings(("tresnet_m",), img_size=32, batch_size="max", warmup=0, repeats=1, budget_gib=1)
    result = probe.probe_model(tiny_net(), "tresnet_m", settings, CPU)
    assert result.train.batch_size == probe.CPU_BATCH and result.max_train_batch is None
    assert "needs a CUDA device" in result.batch_note
    # Per image, in fp32: the conv saves its input (3 x 32 x 32), BatchNorm its input (8 x 32 x 32), ReLU its output
    # (8 x 32 x 32, which the pooling saves too: one storage), the Linear its 8 inputs.
    assert result.saved_bytes_per_image == pytest.approx(4 * (3 * 32 * 32 + 2 * 8 * 32 * 32 + 8))
    resident = probe.resident_training_bytes(tiny_net()) + result.saved_bytes_fixed
    assert result.max_train_batch_estimate == (2**30 - resident) // result.saved_bytes_per_image


def test_saved_bytes_separate_autocast_weight_copies_from_activations():
    model = tiny_net()
    per_image, fixed = probe.saved_bytes_slope(model, 32, CPU, "fp32")
    assert fixed == 2 * 8 * 4 and per_image > 0  # in fp32 only BatchNorm's per-channel mean and 1/std are fixed
    per_image_bf16, fixed_bf16 = probe.saved_bytes_slope(model, 32, CPU, "bf16")
    weights = sum(m.weight.numel() for m in model if isinstance(m, (nn.Conv2d, nn.Linear)))
    assert fixed_bf16 >= 2 * weights  # the bf16 copies of conv and linear weights, once per step
    assert per_image_bf16 < per_image


def test_flops_per_image_counts_multiply_adds_twice():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
    assert probe.flops_per_image(model, 32, CPU) == 2 * 3 * 32 * 32 * 10
    assert model.training  # left as found


def test_estimate_max_batch():
    assert probe.estimate_max_batch(100.0, 1000, 2000) == 10
    assert probe.estimate_max_batch(100.0, 3000, 2000) == 0
    with pytest.raises(ValueError, match="positive"):
        probe.estimate_max_batch(0, 0, 1)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"archs": ()}, "at least one"),
        ({"archs": ("tresnet_q",)}, "Unknown architecture"),
        ({"mode": "eval"}, "mode"),
        ({"precision": "fp8"}, "precision"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": "huge"}, "batch_size"),
        ({"img_size": 30}, "multiple of 4"),
        ({"repeats": 0}, "repeats"),
        ({"budget_gib": -1}, "budget_gib"),
    ],
)
def test_bad_settings_are_refused_with_the_value(changes, message):
    values = {"archs": ("tresnet_m",), **changes}
    with pytest.raises(ValueError, match=message):
        probe.ProbeSettings(**values)


def test_plan_follows_the_device_and_the_preset():
    gpu = probe.plan(torch.device("cuda"), "paper")
    assert gpu.archs == ("tresnet_m", "tresnet_l", "tresnet_xl", "resnet50") and gpu.batch_size == "max"
    assert gpu.precision == "fp16" and gpu.img_size == 224
    cpu = probe.plan(CPU, "cpu")
    assert cpu.archs == ("tresnet_m", "resnet50") and cpu.batch_size == probe.CPU_BATCH and cpu.img_size == 224
    assert cpu.precision == cpu_precision()  # bf16 only where the CPU computes it natively (emulated: 12x slower)
    smoke = probe.plan(CPU, "smoke", archs=["resnet50"], precision="fp32")
    assert smoke.img_size == 64 and smoke.archs == ("resnet50",) and smoke.precision == "fp32"
    with pytest.raises(ValueError, match="preset"):
        probe.plan(CPU, "fast")
    assert probe.parse_archs(" tresnet_m, resnet50 ") == ("tresnet_m", "resnet50") and probe.parse_archs("") is None


@pytest.fixture(scope="module")
def report():
    settings = probe.ProbeSettings(("tresnet_m", "resnet50"), img_size=32, batch_size=2, warmup=1, repeats=2)
    return probe.run_probe(settings, CPU, progress=False, build=lambda arch: tiny_net())


def test_report_table_sits_beside_the_paper(report):
    table = report.table()
    assert list(table.index) == ["tresnet_m", "resnet50"]
    assert table.loc["tresnet_m", "paper V100 224 px: Top Training Speed (img/sec)"] == 730
    assert table.loc["resnet50", "paper V100 224 px: Max Train Batch Size"] == 288
    ours = report.results[0]
    assert table.loc["tresnet_m", probe.TABLE_COLUMNS[0]] == pytest.approx(ours.train.images_per_second, abs=0.05)
    assert "Max Train Batch Size (estimated at 32 px, 16 GiB)" in table.columns  # not to be read as the paper's
    # the header says where each side was measured: ours at the probe's size and precision, the paper's at 224 px
    assert table.columns.name.startswith(f"ours: 32 px, {report.settings.precision}, {report.device}; paper: V100")
    assert "224 px" in table.columns.name and "ours: 32 px" in table.to_string()
    details = report.details()
    assert details.loc["tresnet_m", "train batch"] == 2 and details.loc["tresnet_m", "GFLOPs/image"] >= 0
    assert report.matmul_peak_flops > 0 and ours.achieved_flops("infer") > 0


def test_report_json_and_csv_schema(report, tmp_path):
    data = json.loads(report.to_json(tmp_path / "probe.json").read_text())
    assert {"settings", "device", "environment", "budget_bytes", "matmul_peak_flops", "paper_v100", "results"} <= set(
        data
    )
    assert data["environment"]["versions"]["torch"] == torch.__version__
    row = data["results"][0]
    for key in (
        "arch",
        "parameters",
        "train",
        "infer",
        "saved_bytes_per_image",
        "max_train_batch_estimate",
        "flops_per_image",
        "achieved_train_flops",
    ):
        assert key in row, key
    assert row["train"]["images_per_second"] == pytest.approx(
        row["train"]["batch_size"] / (sorted(row["train"]["seconds"])[0] / 2 + sorted(row["train"]["seconds"])[1] / 2)
    )
    with open(report.to_csv(tmp_path / "probe.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [r["Model"] for r in rows] == ["tresnet_m", "resnet50"]
    assert {"img_size", "precision", "device", probe.TABLE_COLUMNS[0], "train ms/step"} <= set(rows[0])
    record = probe.metrics_record(report, preset="smoke")
    write_metrics(record, tmp_path / "metrics.json")  # holds every contract key
    assert record["metric_name"] == "train_images_per_second" and record["paper_target"] == 730
    assert record["pretrained"] is False


def test_throughput_plot(report, tmp_path, monkeypatch):
    from tresnet_nb.report import plots

    plots.plot_throughput(report, tmp_path / "throughput.png")
    assert (tmp_path / "throughput.png").stat().st_size > 1000
    drawn = []
    monkeypatch.setattr(plots, "finish", lambda fig, path: drawn.append(fig))
    plots.plot_throughput(report)
    # ours at 32 px beside the paper's 224 px bars: the figure says so, in the titles and the legends
    for ax, mode in zip(drawn[0].axes, ("training", "inference"), strict=True):
        assert ax.get_title() == f"{mode}: ours at 32 px, the paper's at 224 px"
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert labels[1] == "paper (V100, 224 px, mixed precision)" and "32 px" in labels[0]


def test_probe_command(tmp_path, capsys):
    out = tmp_path / "p.json"
    code = main(
        [
            "probe",
            "--arch",
            "tresnet_m",
            "--img-size",
            "32",
            "--mode",
            "infer",
            "--batch-size",
            "2",
            "--repeats",
            "1",
            "--precision",
            "fp32",
            "--no-flops",
            "--json",
            str(out),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "Top Inference Speed (img/sec)" in printed and "2930" in printed
    data = json.loads(out.read_text())
    assert data["results"][0]["train"] is None and data["results"][0]["infer"]["batch_size"] == 2
    assert data["settings"]["precision"] == "fp32" and data["matmul_peak_flops"] is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--arch", "tresnet_q"], "Unknown architecture"),
        (["--arch", "tresnet_m", "--batch-size", "0"], "--batch-size"),
        (["--arch", "tresnet_m", "--img-size", "30"], "multiple of 4"),
    ],
)
def test_probe_command_refuses_bad_input(args, message, capsys):
    assert main(["probe", *args]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_probe_notebook_smoke_run(tmp_path, closed_hub):
    from pathlib import Path

    from tresnet_nb.runner import run_notebooks

    root = Path(__file__).resolve().parents[1]
    (outcome,) = run_notebooks([root / "notebooks" / "01_throughput_probe.ipynb"], tmp_path, "smoke", {})
    assert outcome.status == "ok", outcome.error
    run_dir = tmp_path / "01_throughput_probe"
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["metric_name"] == "train_images_per_second" and record["metric_value"] > 0
    assert record["paper_target"] == 730 and record["pretrained"] is False and record["img_size"] == 64
    data = json.loads((run_dir / "probe.json").read_text())
    assert [r["arch"] for r in data["results"]] == ["tresnet_m", "resnet50"]
    with open(run_dir / "memory.csv") as f:
        variants = [row["variant"] for row in csv.DictReader(f)]
    assert variants == [
        "tresnet_m, BatchNorm (timm)",
        "tresnet_m, InPlace-ABN",
        "tresnet_m, gradient checkpointing",
        "resnet50, BatchNorm",
    ]
    for name in ("throughput.png", "memory.png", "probe.csv"):
        assert (run_dir / name).is_file(), name
    executed = (run_dir / "01_throughput_probe.ipynb").read_text()
    assert "not the paper's protocol" in executed and "no high-resolution run on cpu" in executed


def test_a_training_batch_batchnorm_cannot_train_on_is_refused_before_any_timing(capsys, monkeypatch):
    from tresnet_nb.probe import measure

    timed = []
    monkeypatch.setattr(measure, "time_steps", lambda *a, **k: timed.append(a) or pytest.fail("timed"))
    # TResNet-M at 32 px ends on a 1x1 map: one image is one value per BatchNorm channel
    assert main(["probe", "--arch", "tresnet_m", "--img-size", "32", "--batch-size", "1", "--no-flops"]) == 2
    err = capsys.readouterr().err
    assert "tresnet_m at 32 px ends on a 1x1 feature map" in err and "--batch-size 2 or more" in err
    assert "Traceback" not in err and not timed
    from tresnet_nb.model.load import load_model

    model = load_model("tresnet_m", None, num_classes=10)
    assert measure.smallest_norm_input(model, 64, torch.device("cpu")) == 4  # a 2x2 map at 64 px
    measure.check_trainable(model, "tresnet_m", 32, 2, torch.device("cpu"))  # two images: two values, trainable
    measure.check_trainable(model, "tresnet_m", 64, 1, torch.device("cpu"))
