"""Data-parallel training (tresnet_nb.train.distributed) on CPU with gloo, and the ``train`` command alone and under torchrun.

The oracle of :func:`test_ddp_matches_a_single_process_reference` is DDP's own arithmetic, replayed in one process.
Two torchrun processes train a random tresnet_m through the library's learner and :func:`distribute`, with
BATCH_SIZE 8 per process (a global batch of 16), fp32, no augmentation. They are seeded differently on purpose, so
they only agree if DDP broadcasts rank 0's weights and the sharded loader follows rank 0's order. The reference then
starts from rank 0's initial weights and loader RNG, draws the same global batches of 16 with a plain fastai loader,
and for each step runs the model separately on each rank's shard (items 0, 2, 4, ... and 1, 3, 5, ... of the global
batch: the documented stride sharding), each loss divided by 2 so the gradients are averaged as DDP averages them,
then steps the same fastai optimizer the library builds. Running each shard separately matters: BatchNorm
normalises with the statistics of the batch it sees, so one forward over all 16 items would compute a different
function. The running statistics are rank 0's (DDP broadcasts rank 0's buffers), so the reference keeps those of
shard 0. The learner also carries the library's EMA, whose average takes in each rank's own running statistics
after every step; the reference replays it. Gradients not averaged (or summed), shards overlapping or misplaced,
ranks starting apart, or BatchNorm buffers (the model's or the EMA's) left unsynchronised each break one of the
comparisons: with gradients summed, for instance, the first step's gradients are twice the reference's.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_ENV = (
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "GROUP_RANK",
    "MASTER_ADDR",
    "MASTER_PORT",
    "TORCHELASTIC_RUN_ID",
)
# the train command's tests: what they check (launch, sharding, one record, rescoring) does not depend on the network,
# so a small timm ResNet keeps each process short (the DDP equivalence test trains TResNet-M itself)
SMALL_ARCH = "resnet10t"
SEED, LR, BATCH, ITEMS, SIZE, FITS, WORLD, EMA_DECAY = 7, 1e-3, 8, 48, 32, 2, 2, 0.8
# fp32 on CPU, one thread, the same kernels on the same shard shapes: here the two runs agree to the last bit (halving
# a loss is exact in binary floating point). The tolerances leave room for another summation order (DDP's bucketed
# all-reduce vs autograd accumulating two backward passes: about 1e-7 relative) and stay far below what a real fault
# moves (gradients twice as large, or another batch).
WEIGHT_ATOL, GRAD_RTOL, GRAD_ATOL = 1e-5, 1e-4, 1e-7


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_ENV}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["OMP_NUM_THREADS"] = "1"  # what torchrun gives each worker; on a busy 2-core machine threads only fight
    return env


def _run(args: list[str], timeout: float, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``args`` in a session of its own; on timeout end that session (the launcher and its workers), then fail."""
    proc = subprocess.Popen(
        args,
        cwd=ROOT,
        env={**_env(), **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        out, err = proc.communicate()
        pytest.fail(f"{args} did not finish in {timeout}s\n{out[-3000:]}\n{err[-3000:]}")
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def _torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(WORLD), *args]


def _processes_mentioning(marker: str) -> list[str]:
    """Command lines of live processes that contain ``marker`` (a test's unique temporary folder)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if marker in cmd:
                found.append(f"{entry.name}: {cmd}")
    return found


def _loaders(splits, data_cfg: dict, bs: int):
    """Training (shuffled, no augmentation) and validation loaders over ``splits`` at SIZE px with batch ``bs``."""
    from fastai.data.core import DataLoaders
    from fastai.data.load import DataLoader

    from tresnet_nb.data.arrays import Preprocess, TensorItems, to_tensor_images

    mean, std, cpu = tuple(data_cfg["mean"]), tuple(data_cfg["std"]), torch.device("cpu")
    train = TensorItems(to_tensor_images(splits.train_x, SIZE), splits.train_y)
    valid = TensorItems(to_tensor_images(splits.valid_x, SIZE), splits.valid_y)
    train_dl = DataLoader(
        train, bs=bs, shuffle=True, drop_last=True, device=cpu, after_batch=Preprocess(mean, std, augment=False)
    )
    valid_dl = DataLoader(valid, bs=16, device=cpu, after_batch=Preprocess(mean, std, augment=False))
    return DataLoaders(train_dl, valid_dl, device=cpu)


def _setup(output_dir: Path, initial: dict | None = None):
    """The test's config, a learner built by the library (fp32, no augmentation) and the data, as every run uses."""
    from tresnet_nb import RunConfig, build_learner, data_config, load_model, load_splits

    cfg = RunConfig.from_params(
        "ddp",
        preset="smoke",
        precision="fp32",
        img_size=SIZE,
        batch_size=BATCH,
        max_items=ITEMS,
        output_dir=str(output_dir),
        augment="as_built",
    )
    splits = load_splits("fashion_mnist", None, ITEMS)
    model = load_model("tresnet_m", "none", num_classes=len(splits.class_names))
    if initial is not None:
        model.load_state_dict(initial)
    dls = _loaders(splits, data_config(model, SIZE), BATCH)
    return build_learner(cfg, dls, model), splits


def ddp_worker(out: Path) -> None:
    """One torchrun process of the equivalence test: train FITS one-epoch fits, save what the test compares."""
    import torch.distributed as dist
    from fastai.callback.core import Callback
    from fastai.callback.progress import ProgressCallback

    from tresnet_nb import predict, seed_everything
    from tresnet_nb.train.callbacks import EMA, EpochLog
    from tresnet_nb.train.checkpoint import Checkpoint
    from tresnet_nb.train.distributed import cleanup, distribute, init_distributed

    class Probe(Callback):
        """What the training loop looked like from inside: the model it ran, batches per epoch, first gradients."""

        order = 30  # after DistributedDDP (20) has wrapped the model for the training phase

        def __init__(self) -> None:
            self.models, self.batches, self.steps, self.grads = [], [], 0, None

        def before_train(self) -> None:
            self.models.append(type(self.learn.model).__name__)
            self.batches.append(len(self.learn.dl))

        def after_backward(self) -> None:
            self.steps += 1
            if self.grads is None:
                model = getattr(self.learn.model, "module", self.learn.model)
                self.grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}

    info = init_distributed()
    seed_everything(SEED + info.rank)  # different on purpose: see the module docstring
    learn, _ = _setup(out / "run")
    learn.remove_cb(ProgressCallback)
    probe, ema = Probe(), EMA(EMA_DECAY)
    learn.add_cbs([probe, ema, EpochLog("ddp-test"), Checkpoint(out / f"checkpoint-rank{info.rank}.pth", "test")])
    distribute(learn, info)
    initial = {k: v.detach().clone() for k, v in learn.model.state_dict().items()}
    loader_rng = learn.dls.train.rng.getstate()
    values = []
    for _ in range(FITS):
        learn.fit(1, LR)
        values.append([float(v) for v in learn.recorder.values[-1]])
    ema.use_average()  # once, after the last fit, as train.fit.fit does at the end of a plan
    probs, targets = predict(learn)
    dl = learn.dls.train
    torch.save(
        {
            "backend": dist.get_backend(),
            "initial": initial,
            "loader_rng": loader_rng,
            "values": values,
            "final": {k: v.detach().clone() for k, v in learn.model.state_dict().items()},
            "grads": probe.grads,
            "models": probe.models,
            "batches": probe.batches,
            "steps": probe.steps,
            "probs": probs,
            "targets": targets,
            "after": {"model": type(learn.model).__name__, "n": dl.n, "get_idxs_patched": "get_idxs" in dl.__dict__},
        },
        out / f"rank{info.rank}.pt",
    )
    cleanup()


def reference(initial: dict, loader_rng: tuple, out: Path) -> dict:
    """DDP's arithmetic in one process (see the module docstring): final model, first gradients, predictions."""
    from fastai.data.load import DataLoader

    learn, _ = _setup(out, initial)
    model = learn.model.train().to(memory_format=torch.channels_last)  # as the library's ChannelsLast trains it
    learn.create_opt()  # the optimizer fastai's fit makes, with its hyper-parameters
    learn.opt.set_hypers(wd=learn.wd)
    learn.opt.set_hypers(lr=LR)
    average = copy.deepcopy(model).requires_grad_(False)  # the library's EMA: copied when the first fit starts
    train = learn.dls.train
    # the global batches of one process with batch WORLD x BATCH, in the order rank 0's loader drew
    loader = DataLoader(train.dataset, bs=WORLD * BATCH, shuffle=True, drop_last=True, after_batch=train.after_batch)
    loader.rng.setstate(loader_rng)
    first_grads, steps = None, 0
    for _ in range(FITS):
        for x, y in loader:
            for r in range(WORLD):
                xs = x[r::WORLD].contiguous(memory_format=torch.channels_last)
                (learn.loss_func(model(xs), y[r::WORLD]) / WORLD).backward()
                if r == 0:  # DDP keeps rank 0's running statistics
                    kept = [b.detach().clone() for b in model.buffers()]
            with torch.no_grad():
                for b, k in zip(model.buffers(), kept, strict=True):
                    b.copy_(k)
            if first_grads is None:
                first_grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
            learn.opt.step()
            learn.opt.zero_grad()
            steps += 1
            with torch.no_grad():  # EMA after every step, of weights and buffers (counters copied)
                for avg, new in zip(average.state_dict().values(), model.state_dict().values(), strict=True):
                    avg.lerp_(new, 1 - EMA_DECAY) if avg.is_floating_point() else avg.copy_(new)
    model.load_state_dict(average.state_dict())  # the live weights train on across fits; the average goes in at the end
    model.eval()
    with torch.no_grad():
        batches = [(model(x.contiguous(memory_format=torch.channels_last)), y) for x, y in learn.dls.valid]
    logits, targets = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    return {
        "final": model.state_dict(),
        "grads": first_grads,
        "steps": steps,
        "probs": logits.softmax(1),
        "valid_loss": float(learn.loss_func(logits, targets)),
        "accuracy": float((logits.argmax(1) == targets).float().mean()),
    }


@pytest.mark.slow
def test_ddp_matches_a_single_process_reference(tmp_path):
    start = time.perf_counter()
    proc = _run(_torchrun(str(Path(__file__).resolve()), "ddp-worker", str(tmp_path)), timeout=240)
    assert proc.returncode == 0, proc.stderr[-5000:]
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=False)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=False)
    launched = time.perf_counter() - start
    assert r0["backend"] == "gloo"
    # the ranks were seeded apart: different initial weights and loader generators before the first fit
    assert any(not torch.equal(r0["initial"][n], r1["initial"][n]) for n in r0["initial"])
    assert r0["loader_rng"] != r1["loader_rng"]
    # inside the loop: DDP while training, on half of the 48 items per rank (3 batches of 8 per epoch); plain after
    for r in (r0, r1):
        assert r["models"] == ["DistributedDataParallel"] * FITS and r["batches"] == [ITEMS // WORLD // BATCH] * FITS
        assert r["steps"] == FITS * ITEMS // (WORLD * BATCH)
        assert r["after"] == {"model": "TResNet", "n": ITEMS, "get_idxs_patched": False}
        assert list(r["final"]) == list(r0["initial"])  # plain state_dict keys, no 'module.' prefix
    # the two ranks hold the same model, gradients, metrics and predictions
    for name in r0["final"]:
        assert torch.equal(r0["final"][name], r1["final"][name]), name
    for name in r0["grads"]:
        assert torch.equal(r0["grads"][name], r1["grads"][name]), name
    assert r0["values"] == r1["values"]
    assert torch.equal(r0["probs"], r1["probs"]) and len(r0["targets"]) == ITEMS // 2  # the whole validation set
    moved = [
        n
        for n in r0["final"]
        if r0["final"][n].is_floating_point() and not torch.equal(r0["final"][n], r0["initial"][n])
    ]
    assert moved, "training changed nothing"

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as torchrun's workers (OMP_NUM_THREADS=1): the same kernels' summation order
    try:
        ref = reference(r0["initial"], r0["loader_rng"], tmp_path / "ref")
    finally:
        torch.set_num_threads(threads)
    assert ref["steps"] == r0["steps"]
    for name, grad in ref["grads"].items():
        torch.testing.assert_close(r0["grads"][name], grad, rtol=GRAD_RTOL, atol=GRAD_ATOL, msg=name)
    worst = max(float((r0["final"][n].double() - v.double()).abs().max()) for n, v in ref["final"].items())
    assert worst <= WEIGHT_ATOL, f"DDP and the reference differ by up to {worst:.2e} in a weight or buffer"
    torch.testing.assert_close(r0["probs"], ref["probs"], rtol=0, atol=1e-4)
    assert r0["values"][-1][1] == pytest.approx(ref["valid_loss"], abs=1e-4)
    assert r0["values"][-1][2] == pytest.approx(ref["accuracy"], abs=1e-9)
    # rank 0 alone writes checkpoints and prints the per-epoch lines
    assert (tmp_path / "checkpoint-rank0.pth").is_file() and not (tmp_path / "checkpoint-rank1.pth").exists()
    assert proc.stdout.count("[tresnet-nb] ddp-test epoch") == FITS, proc.stdout
    assert not _processes_mentioning(str(tmp_path)), "processes of the job outlived it"
    print(f"torchrun part {launched:.0f}s, max weight difference to the reference {worst:.1e}")


def _metric_of_saved_model(out: Path, tta: bool = False) -> float:
    """The run in ``out`` scored again in this process: its model.safetensors, with the library's own data and
    learner for its run_config.json, predicting the whole evaluation split on one thread (as torchrun's workers)."""
    from tresnet_nb import RunConfig, build_learner, load_model, open_data, predict
    from tresnet_nb.evaluation.scores import score

    cfg = RunConfig.load(out / "run_config.json")
    model = load_model(cfg.arch, str(out / "model.safetensors"))  # its class count from the file's metadata
    data = open_data(cfg, model, torch.device("cpu"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        probs, targets = predict(build_learner(cfg, data.dls, model, task=data.task), tta=tta)
    finally:
        torch.set_num_threads(threads)
    return score(probs, targets, data.class_names, data.task, data.metric).metric_value


@pytest.mark.slow
def test_train_command_under_torchrun_writes_one_metrics_file(tmp_path):
    out = tmp_path / "ddp-run"
    args = [
        "-m",
        "tresnet_nb",
        "train",
        "--preset",
        "smoke",
        "-p",
        "DATASET",
        "fashion_mnist",
        "-p",
        "MAX_ITEMS",
        "64",
        "-p",
        "ARCH",
        SMALL_ARCH,
        "--out",
        str(out),
    ]
    proc = _run(_torchrun(*args), timeout=240)
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert sorted(p.name for p in out.iterdir()) == [  # the checkpoint dropped once the final weights were saved
        "finished.json",
        "metrics.json",
        "model.safetensors",
        "predictions.npz",
        "run_config.json",
        "tensorboard",
    ]
    assert len(list((out / "tensorboard").iterdir())) == 1  # one event file: rank 0 alone tracks
    assert not list(tmp_path.rglob("*.tmp*"))
    record = json.loads((out / "metrics.json").read_text())
    assert record["world_size"] == 2 and record["batch_size_per_process"] == 16 and record["global_batch_size"] == 32
    assert record["n_eval"] == 32  # the whole validation split once, not once per process
    # the whole validation split's accuracy under the saved model, not one rank's half or an average of halves
    assert record["metric_name"] == "accuracy"
    assert record["metric_value"] == pytest.approx(_metric_of_saved_model(out), abs=1e-9)
    assert record["pretrained"] is False and record["train_seconds"] > 0
    assert proc.stdout.count("[tresnet-nb] train epoch 1/1") == 1, proc.stdout  # printed by rank 0 only
    assert not _processes_mentioning(str(tmp_path)), "processes of the job outlived it"
    # run again: every rank reads rank 0's checkpoint and finds the training done
    again = _run(_torchrun(*args), timeout=240)
    assert again.returncode == 0, again.stderr[-5000:]
    assert again.stdout.count("Training already complete") == WORLD  # each rank read the record and said so
    assert json.loads((out / "metrics.json").read_text())["resumed_from"].startswith("stage 1 epoch 1")


@pytest.mark.slow
def test_train_command_under_torchrun_on_an_image_file_dataset(tmp_path, monkeypatch):
    from tresnet_nb import get_dataset

    root = get_dataset("plant_pathology").write_fixture(tmp_path / "pp")
    out = tmp_path / "pp-run"
    args = [
        "-m",
        "tresnet_nb",
        "train",
        "--preset",
        "smoke",
        "-p",
        "DATASET",
        "plant_pathology",
        "-p",
        "DATA_ROOT",
        str(root),
        "-p",
        "ARCH",
        SMALL_ARCH,
        "--out",
        str(out),
    ]
    proc = _run(_torchrun(*args), timeout=240, env={"TRESNET_NB_CACHE": str(tmp_path / "cache")})
    assert proc.returncode == 0, proc.stderr[-5000:]
    record = json.loads((out / "metrics.json").read_text())
    assert record["metric_name"] == "mean_roc_auc"
    monkeypatch.setenv("TRESNET_NB_CACHE", str(tmp_path / "cache"))
    assert record["metric_value"] == pytest.approx(_metric_of_saved_model(out), abs=1e-9)
    assert record["world_size"] == 2 and record["n_eval"] == len(get_dataset("plant_pathology").read(root)["valid"])
    assert list((tmp_path / "cache").rglob("*.img"))  # rank 0 cached the resized images, in the test's folder
    assert not _processes_mentioning(str(tmp_path)), "processes of the job outlived it"


@pytest.mark.slow
def test_train_command_alone(tmp_path):
    out = tmp_path / "alone"
    proc = _run(
        [
            sys.executable,
            "-m",
            "tresnet_nb",
            "train",
            "--preset",
            "smoke",
            "-p",
            "dataset",
            "fashion_mnist",
            "-p",
            "max_items",
            "32",
            "-p",
            "ARCH",
            SMALL_ARCH,
            "-p",
            "RECIPE",
            "miil",
            "-p",
            "MIXUP",
            "0.2",
            "-p",
            "PROGRESSIVE",
            "32:1:8,64:1:16",
            "-p",
            "TTA",
            "True",
            "--out",
            str(out),
        ],
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    record = json.loads((out / "metrics.json").read_text())
    assert record["world_size"] == 1 and record["global_batch_size"] == record["batch_size_per_process"] == 16
    assert record["n_eval"] == 16
    assert record["metric_value"] == pytest.approx(_metric_of_saved_model(out, tta=True), abs=1e-9)  # TTA as run
    assert record["recipe"] == "miil" and record["epochs"] == 2 and record["options"]["mixup"] == 0.2
    phases = json.loads((out / "run_config.json").read_text())["options"]["progressive"]
    assert phases == [{"size": 32, "epochs": 1, "batch_size": 8}, {"size": 64, "epochs": 1, "batch_size": 16}]
    assert (out / "model.safetensors").is_file() and proc.stdout.count("[tresnet-nb] train epoch 1/1") == 2


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["-p", "BOGUS", "1"], "'BOGUS'"),
        (["-p", "epochs", "two"], "'two'"),
        (["-p", "EPOCHS", "1", "-p", "epochs", "2"], "twice"),
        (["--preset", "huge"], "'huge'"),
        (["--sync-bn"], "sync_bn needs CUDA"),
        (["-p", "PROGRESSIVE", "224x3"], "not understood"),
        (["-p", "MIXUP", "-1"], "MIXUP must be"),
        (["-p", "RECIPE", "timm"], "Unknown recipe 'timm'"),
        (["-p", "ACCUMULATE", "0"], "ACCUMULATE must be"),
    ],
)
def test_train_command_refuses_bad_input_before_running(tmp_path, capsys, monkeypatch, argv, named):
    from tresnet_nb.__main__ import main

    if "--sync-bn" in argv and torch.cuda.is_available():
        pytest.skip("SyncBatchNorm is refused on CPU only")
    for name in LAUNCH_ENV:
        monkeypatch.delenv(name, raising=False)
    assert main(["train", *argv, "--out", str(tmp_path / "out")]) == 2
    assert named in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_init_distributed_alone_and_with_a_partial_launch_environment(monkeypatch):
    import torch.distributed as dist

    from tresnet_nb.runtime import is_main, rank, world_size
    from tresnet_nb.train.distributed import init_distributed

    for name in LAUNCH_ENV:
        monkeypatch.delenv(name, raising=False)
    info = init_distributed()
    assert (info.rank, info.world_size, info.backend, info.is_main) == (0, 1, None, True)
    assert not dist.is_initialized() and (rank(), world_size(), is_main()) == (0, 1, True)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(ValueError, match=r"\['LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT'\] are not"):
        init_distributed()
    assert not is_main()  # rank 1 of a launch never writes, even before it joins the group


def test_shards_cover_every_item_once_padded_by_the_first(tmp_path):
    import torch.distributed as dist

    from tresnet_nb.train.distributed import ShardIndices

    class Loader:  # the two attributes of a fastai DataLoader that sharding uses
        def __init__(self, n: int) -> None:
            self.n = n

        def get_idxs(self) -> list[int]:
            return list(range(self.n))[::-1]  # an epoch order that is not the identity

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        loaders = [Loader(7) for _ in range(3)]  # one per rank
        shards = [ShardIndices(loaders[r], r, 3)() for r in range(3)]
        assert [dl.n for dl in loaders] == [3, 3, 3]  # each loader now counts its rank's share
    finally:
        dist.destroy_process_group()
    assert shards == [[6, 3, 0], [5, 2, 6], [4, 1, 5]]  # order 6..0 padded with 6, 5; rank r takes r, r+3, r+6
    assert sorted(i for s in shards for i in s) == sorted([*range(7), 6, 5])


PREP_TIMEOUT_MIN, PREP_DELAY_S, PREP_ITEMS = 0.05, 0.5, {"train": 16, "valid": 8}  # a 3 s process-group timeout
PREP_HOLD_S = 9.0  # how long rank 0 keeps the other waiting at a barrier, three times the timeout


def _image_folder(root: Path, items: dict[str, int], corrupt: int | None = None) -> dict[str, list[str]]:
    """Small PNG files for each split (the file names of each); the train file ``corrupt`` holds no image."""
    from PIL import Image

    root.mkdir(parents=True)
    names = {}
    for split, n in items.items():
        names[split] = [f"{split}-{i:02d}.png" for i in range(n)]
        for i, name in enumerate(names[split]):
            Image.new("RGB", (12, 10), (20 * i % 256, 80, 160)).save(root / name)
    if corrupt is not None:
        (root / names["train"][corrupt]).write_bytes(b"not an image")
    return names


def _file_dataset(root: Path):
    """The folder ``root`` (see :func:`_image_folder`) as a two-class single-label Dataset of image files."""
    import numpy as np

    from tresnet_nb.data.base import Dataset, Split

    splits = {}
    for split in ("train", "valid"):
        paths = tuple(sorted(root.glob(f"{split}-*.png")))
        splits[split] = Split(ids=tuple(p.stem for p in paths), labels=np.arange(len(paths)) % 2, paths=paths)
    return Dataset("folder", ("a", "b"), "single-label", splits)


def prep_worker(out: Path) -> None:
    """One torchrun process of the preparation test: open image-file data whose screening takes longer than the
    process group's timeout, then data with a corrupt image, then hold a barrier past the timeout."""
    import torch.distributed as dist

    from tresnet_nb import RunConfig
    from tresnet_nb.data import get_dataset, verify
    from tresnet_nb.data.base import DatasetError
    from tresnet_nb.steps.data import Data
    from tresnet_nb.train.distributed import cleanup, init_distributed

    checked, decode = [], verify.image_problem

    def slow(path: Path) -> str | None:  # a slow disk: screening the whole set alone outlasts the timeout
        checked.append(f"{Path(path).parent.name}/{Path(path).name}")
        time.sleep(PREP_DELAY_S)
        return decode(path)

    verify.image_problem = slow
    data_cfg = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}
    info = init_distributed()  # after the imports, so that the ranks start the preparation together
    cfg = RunConfig.from_params(
        "prep", preset="smoke", dataset="folder", img_size=32, batch_size=4, output_dir=str(out / f"run{info.rank}")
    )
    start = time.perf_counter()
    data = Data(cfg, get_dataset("folder"), _file_dataset(out / "images"), data_cfg, info.device)
    result = {
        "seconds": time.perf_counter() - start,
        "train": [str(p) for p in data.dls.train.dataset.split.paths],
        "valid": [str(p) for p in data.dls.valid.dataset.split.paths],
    }
    try:
        Data(cfg, get_dataset("folder"), _file_dataset(out / "bad"), data_cfg, info.device)
        result["bad"] = "no error"
    except (DatasetError, RuntimeError) as err:
        result["bad"] = f"{type(err).__name__}: {err}"
    result["checked"] = checked
    if info.rank == 0:
        time.sleep(PREP_HOLD_S)
    start = time.perf_counter()
    try:
        dist.barrier()
        result["held"] = None
    except RuntimeError as err:
        result["held"] = [type(err).__name__, time.perf_counter() - start]
    (out / f"prep-rank{info.rank}.json").write_text(json.dumps(result))
    cleanup()


@pytest.mark.slow
def test_image_file_preparation_outlasting_the_process_group_timeout_succeeds(tmp_path):
    names = _image_folder(tmp_path / "images", PREP_ITEMS)
    bad = _image_folder(tmp_path / "bad", {"train": 4, "valid": 2}, corrupt=2)
    env = {"TRESNET_NB_DIST_TIMEOUT_MIN": str(PREP_TIMEOUT_MIN), "TRESNET_NB_CACHE": str(tmp_path / "cache")}
    proc = _run(_torchrun(str(Path(__file__).resolve()), "prep-worker", str(tmp_path)), timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-5000:]
    r0, r1 = (json.loads((tmp_path / f"prep-rank{r}.json").read_text()) for r in range(WORLD))
    timeout_s = PREP_TIMEOUT_MIN * 60
    # the environment's timeout was the group's: rank 1, held at a barrier for three times as long, timed out
    assert r1["held"] is not None, "a barrier held past TRESNET_NB_DIST_TIMEOUT_MIN did not time out"
    assert timeout_s * 0.8 <= r1["held"][1] < PREP_HOLD_S, r1["held"]
    # and the preparation took longer than that timeout in each rank, yet succeeded in both, with the same items
    for r in (r0, r1):
        assert r["seconds"] > timeout_s, r["seconds"]
        assert len(r["train"]) == PREP_ITEMS["train"] and len(r["valid"]) == PREP_ITEMS["valid"]
        assert all(Path(p).is_file() and (tmp_path / "cache") in Path(p).parents for p in r["train"] + r["valid"])
    assert r0["train"] == r1["train"] and r0["valid"] == r1["valid"]
    # the ranks shared the screening: each image checked once, half of them in each rank (the corrupt set's train
    # split too, where both stopped)
    expected = [f"images/{n}" for n in names["train"] + names["valid"]] + [f"bad/{n}" for n in bad["train"]]
    assert sorted(r0["checked"] + r1["checked"]) == sorted(expected)
    assert len(r0["checked"]) == len(r1["checked"])
    # a corrupt image stops every rank with the same DatasetError naming it; none is left waiting for rank 0
    for r in (r0, r1):
        assert r["bad"].startswith("DatasetError: 1 images of train cannot be decoded"), r["bad"]
        assert bad["train"][2] in r["bad"]
    assert not _processes_mentioning(str(tmp_path)), "processes of the job outlived it"


@pytest.mark.parametrize("backend", ["gloo", "nccl"])
def test_process_group_kwargs_carry_the_timeout_and_the_nccl_device(backend):
    from tresnet_nb.train.distributed import process_group_kwargs

    kwargs = process_group_kwargs(backend, 3, timedelta(minutes=90))
    expected = {"backend": backend, "init_method": "env://", "timeout": timedelta(minutes=90)}
    if backend == "nccl":  # NCCL binds this process's GPU: the communicator forms at once, barriers use that GPU
        expected["device_id"] = torch.device("cuda", 3)
    assert kwargs == expected


def test_process_group_timeout_from_the_argument_the_environment_or_the_default(monkeypatch):
    from tresnet_nb.train.distributed import DEFAULT_TIMEOUT_MIN, TIMEOUT_ENV, dist_timeout

    monkeypatch.delenv(TIMEOUT_ENV, raising=False)
    assert dist_timeout() == timedelta(minutes=DEFAULT_TIMEOUT_MIN) == timedelta(hours=1)
    monkeypatch.setenv(TIMEOUT_ENV, "2.5")
    assert dist_timeout() == timedelta(seconds=150)
    assert dist_timeout(120) == timedelta(hours=2)  # the argument wins
    for text in ("ten", "0", "-5", "nan", "inf"):
        monkeypatch.setenv(TIMEOUT_ENV, text)
        with pytest.raises(ValueError, match=f"{TIMEOUT_ENV}={text!r}"):
            dist_timeout()
    with pytest.raises(ValueError, match="timeout_min=0"):
        dist_timeout(0)


def test_nccl_barriers_name_this_process_gpu(monkeypatch):
    from tresnet_nb import runtime

    calls = []

    class FakeGroup:  # the two functions of torch.distributed that runtime.barrier uses
        def __init__(self, backend: str) -> None:
            self.backend = backend

        def get_backend(self) -> str:
            return self.backend

        def barrier(self, **kwargs) -> None:
            calls.append(kwargs)

    monkeypatch.setenv("LOCAL_RANK", "3")
    for backend in ("nccl", "gloo"):
        monkeypatch.setattr(runtime, "_dist", lambda b=backend: FakeGroup(b))
        runtime.barrier()
    # without device_ids an NCCL barrier guesses a GPU (rank mod device count, or the current one), warns, and can
    # hang or put every rank's context on GPU 0 (torch.distributed.barrier's notes); gloo takes no device
    assert calls == [{"device_ids": [3]}, {}]


def test_work_shared_by_every_rank_raises_in_every_rank(tmp_path):
    import torch.distributed as dist

    from tresnet_nb.runtime import every_rank

    assert every_rank(lambda rank, world: (rank, world)) == [(0, 1)]  # alone: no process group needed
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        assert every_rank(lambda rank, world: [rank, world]) == [[0, 1]]

        def fail(rank: int, world: int) -> None:
            raise KeyError("item 7")

        with pytest.raises(KeyError, match="item 7"):
            every_rank(fail)
        assert every_rank(lambda rank, world: "still in step") == ["still in step"]  # the group is usable after
    finally:
        dist.destroy_process_group()


@pytest.mark.cuda
def test_nccl_alone_binds_the_device_and_trains_ddp(monkeypatch):
    import socket

    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from tresnet_nb import runtime
    from tresnet_nb.train.distributed import process_group_kwargs

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for name, value in {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "RANK": "0",
        "WORLD_SIZE": "1",
        "LOCAL_RANK": "0",
    }.items():
        monkeypatch.setenv(name, value)
    torch.cuda.set_device(0)
    dist.init_process_group(**process_group_kwargs("nccl", 0, timedelta(minutes=5)), rank=0, world_size=1)
    try:
        assert dist.get_backend() == "nccl"
        assert dist.distributed_c10d._get_default_group().bound_device_id == torch.device("cuda", 0)
        runtime.barrier()
        total = torch.tensor([2.0], device="cuda")
        dist.all_reduce(total)
        assert total.item() == 2.0
        torch.manual_seed(0)
        model = DistributedDataParallel(torch.nn.Linear(4, 2).cuda(), device_ids=[0])
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        x, y = torch.randn(8, 4, device="cuda"), torch.randn(8, 2, device="cuda")
        losses = []
        for _ in range(3):
            loss = torch.nn.functional.mse_loss(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert losses[2] < losses[0], losses  # full-batch gradient descent at a small step lowers the loss
        assert runtime.every_rank(lambda rank, world: rank) == [0]
    finally:
        dist.destroy_process_group()


if __name__ == "__main__" and sys.argv[1:2] == ["ddp-worker"]:
    ddp_worker(Path(sys.argv[2]))
if __name__ == "__main__" and sys.argv[1:2] == ["prep-worker"]:
    prep_worker(Path(sys.argv[2]))
