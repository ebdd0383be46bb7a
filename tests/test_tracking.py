"""Tracking: a 3-trial smoke sweep of the quickstart (each trial a run through the runner) against a real MLflow
server (parameters, the metric history per epoch, metrics.json among the artifacts) and TensorBoard's event reader
(one point per epoch); no secret in what is logged; a server that dies mid-run costs seconds and a warning, not the
run; rank 0 alone writes."""

from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path

import nbformat
import pytest
from mlflowserver import start_server, stop_server

from tresnet_nb.__main__ import main
from tresnet_nb.config import RunConfig
from tresnet_nb.report.tracking import Tracker, redact, require_mlflow

PLANTED = {"HF_TOKEN": "hf_plantedTokenValue123", "KAGGLE_KEY": "kagglePlantedKey456"}
EPOCHS = 2


def events(folder: Path) -> object:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(folder))
    accumulator.Reload()
    return accumulator


def holds_a_secret(folder: Path) -> list[str]:
    """Files under ``folder`` whose bytes hold a planted secret."""
    return [
        str(p) for p in folder.rglob("*") if p.is_file() and any(s.encode() in p.read_bytes() for s in PLANTED.values())
    ]


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    """A 3-trial smoke sweep of the quickstart (2 epochs a trial) through the runner, TRACKING pointing at a real
    MLflow server, with secrets planted in the environment; the server stays up for the checks. One sweep serves the
    sweep's acceptance and the tracking's, to keep the suite short."""
    root = tmp_path_factory.mktemp("tracked")
    process, url = start_server(root / "server")
    saved = {k: os.environ.get(k) for k in PLANTED}
    os.environ.update(PLANTED)
    try:
        code = main(
            [
                "sweep",
                "notebooks/00_quickstart.ipynb",
                "--trials",
                "3",
                "--space",
                "LR=loguniform:1e-4:1e-2",
                "--preset",
                "smoke",
                "-p",
                "EPOCHS",
                str(EPOCHS),
                "-p",
                "MAX_ITEMS",
                "16",
                "-p",
                "TRACKING",
                url,
                "--out",
                str(root / "sweep"),
            ]
        )
        yield url, code, root / "sweep"
    finally:
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
        stop_server(process)


def trial_dir(sweep: Path, number: int) -> Path:
    return sweep / "trials" / f"{number:03d}" / "00_quickstart"


@pytest.mark.slow
def test_a_three_trial_smoke_sweep_of_the_quickstart_writes_three_rows(tracked):
    _, code, sweep = tracked
    assert code == 0
    rows = list(csv.DictReader(open(sweep / "trials.csv")))
    assert len(rows) == 3 and all(1e-4 <= float(r["LR"]) <= 1e-2 for r in rows)
    assert rows[0]["state"] == rows[1]["state"] == "COMPLETE"  # the median pruner waits for two trials
    assert rows[2]["state"] in ("COMPLETE", "PRUNED")  # the third may be behind the first two after an epoch
    for n, row in enumerate(rows):
        record = trial_dir(sweep, n) / "metrics.json"
        if row["state"] == "COMPLETE":
            assert float(row["accuracy"]) == json.loads(record.read_text())["metric_value"]
        else:
            assert (trial_dir(sweep, n) / "pruned.json").is_file() and not record.exists()
    assert (sweep / "best.json").is_file() and (sweep / "history.png").is_file()


@pytest.mark.slow
def test_each_trial_is_in_mlflow_with_params_epoch_history_and_metrics_json(tracked, tmp_path):
    from mlflow.tracking import MlflowClient

    url, _, sweep = tracked
    client = MlflowClient(tracking_uri=url)
    experiment = client.get_experiment_by_name("tresnet-nb/00_quickstart")
    runs = {r.data.tags["sweep_trial"]: r for r in client.search_runs([experiment.experiment_id])}
    assert sorted(runs) == ["0", "1", "2"]
    states = {r["number"]: r["state"] for r in csv.DictReader(open(sweep / "trials.csv"))}
    for number, run in runs.items():
        if states[number] == "PRUNED":  # stopped after the epoch pruned.json names, and its MLflow run says so
            assert run.info.status == "KILLED"
            epoch = json.loads((trial_dir(sweep, int(number)) / "pruned.json").read_text())["epoch"]
            assert [m.step for m in client.get_metric_history(run.info.run_id, "accuracy")] == list(range(1, epoch + 1))
            continue
        assert run.info.status == "FINISHED"
        params = run.data.params
        assert (params["epochs"], params["preset"], params["max_items"], params["tracking"]) == (
            "2",
            "smoke",
            "16",
            url,
        )
        assert params["option.augment"] == "none" and params["arch"] == "tresnet_m"
        history = client.get_metric_history(run.info.run_id, "accuracy")
        assert [m.step for m in history] == [1, 2]  # one point per trained epoch
        assert len(client.get_metric_history(run.info.run_id, "train_loss")) == EPOCHS
        record = json.loads((trial_dir(sweep, int(number)) / "metrics.json").read_text())
        assert run.data.metrics["final.metric_value"] == pytest.approx(record["metric_value"])
        assert float(params["lr"]) == pytest.approx(record["lr"])
    run = runs["0"]
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"metrics.json", "run_config.json", "training.png"} <= names
    local = client.download_artifacts(run.info.run_id, "metrics.json", str(tmp_path))
    assert json.loads(Path(local).read_text()) == json.loads((trial_dir(sweep, 0) / "metrics.json").read_text())
    logged = [v for r in runs.values() for v in (*r.data.params.values(), *r.data.tags.values())]
    assert not [v for v in logged if any(s in v for s in PLANTED.values())]
    assert holds_a_secret(tmp_path) == []


@pytest.mark.slow
def test_tensorboard_holds_one_point_per_epoch_and_no_secret(tracked):
    _, _, sweep = tracked
    out = trial_dir(sweep, 0)
    accumulator = events(out / "tensorboard")
    for tag in ("train_loss", "valid_loss", "accuracy"):
        assert [e.step for e in accumulator.Scalars(tag)] == [1, 2], tag
    assert accumulator.Scalars("final/metric_value")[0].value == pytest.approx(
        json.loads((out / "metrics.json").read_text())["metric_value"]
    )
    assert holds_a_secret(sweep / "trials") == []
    last = nbformat.read(out / "00_quickstart.ipynb", as_version=4).cells[-1]
    printed = "".join(o.get("text", "") for o in last.outputs)
    assert "MLflow: run " in printed and f"python -m tresnet_nb publish {out}" in printed


def _cfg(tmp_path: Path, tracking: str | None, **extra: object) -> RunConfig:
    return RunConfig.from_params(
        "00_quickstart",
        preset="smoke",
        output_dir=str(tmp_path / "run"),
        data_root=f"/data/{PLANTED['HF_TOKEN']}/x",
        tracking=tracking,
        notebook_params=extra,
    )


def test_no_secret_reaches_a_local_store_or_tensorboard(tmp_path, monkeypatch):
    for k, v in PLANTED.items():
        monkeypatch.setenv(k, v)
    store = tmp_path / "mlruns"
    cfg = _cfg(tmp_path, str(store), hub_token="plainSecretInAParameter")
    tracker = Tracker(cfg, {"api_key": "anotherSecretOption", "augment": "flip"})
    tracker.log_epoch({"accuracy": 0.5})
    tracker.finish({"metric_value": 0.5, "note": f"token {PLANTED['KAGGLE_KEY']}"})
    assert tracker.failure is None
    every = [p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file() and "checkpoint" not in p.name]
    every += [p.read_bytes() for p in store.rglob("*") if p.is_file()]
    for secret in [*PLANTED.values(), "plainSecretInAParameter", "anotherSecretOption"]:
        assert not [b for b in every if secret.encode() in b], secret
    assert redact("https://user:pw123456@host/x") == "https://user:***@host/x"


def test_a_server_that_dies_mid_run_costs_seconds_and_a_warning(tmp_path):
    process, url = start_server(tmp_path / "server")
    try:
        tracker = Tracker(_cfg(tmp_path, url), {})
        tracker.log_epoch({"accuracy": 0.25})
        assert tracker.failure is None and tracker.run_id
    finally:
        stop_server(process)
    start = time.perf_counter()
    with pytest.warns(UserWarning, match="failed .* the run goes on without it") as caught:
        for value in (0.5, 0.75):
            tracker.log_epoch({"accuracy": value})
        tracker.finish({"metric_value": 0.75})
    added = time.perf_counter() - start
    assert len(caught) == 1 and added < 10.0, added  # one bounded retry round, then MLflow is left alone
    assert [e.step for e in events(tmp_path / "run" / "tensorboard").Scalars("accuracy")] == [1, 2, 3]
    assert "MLflow: FAILED" in tracker.where()


def test_only_rank_0_writes(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    tracker = Tracker(_cfg(tmp_path, str(tmp_path / "mlruns")), {})
    tracker.log_epoch({"accuracy": 0.5})
    tracker.finish({"metric_value": 0.5})
    assert not (tmp_path / "run" / "tensorboard").exists() and not (tmp_path / "mlruns").exists()


def test_tracking_without_mlflow_says_how_to_install_it_and_a_password_in_tracking_is_refused(tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "mlflow", None)
    with pytest.raises(ImportError, match=r"pip install 'tresnet-nb\[tracking\]'"):
        require_mlflow()
    with pytest.raises(ValueError, match="MLFLOW_TRACKING_PASSWORD"):
        _cfg(tmp_path, "https://me:hunter22@mlflow.example/")


TRACKED = [
    "00_quickstart",
    "02_cifar",
    "03_stanford_cars",
    "04_oxford_flowers",
    "05_herbarium_2020",
    "06_plant_pathology_2020",
    "08_your_own_data",
]


@pytest.mark.parametrize("stem", TRACKED)
def test_training_notebooks_take_tracking_and_end_by_saying_where_and_how_to_publish(stem):
    import papermill

    path = Path(__file__).resolve().parents[1] / "notebooks" / f"{stem}.ipynb"
    assert "TRACKING" in papermill.inspect_notebook(str(path))
    code = [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
    # the config cell reads TRACKING with the other parameters (RunConfig.from_notebook, tests/test_config.py)
    assert any(f'tnb.RunConfig.from_notebook("{stem}", globals())' in s for s in code)
    assert any("tracker = tnb.track(cfg, learn)" in s for s in code)
    assert code[-1] == "print(tracker.where())"
