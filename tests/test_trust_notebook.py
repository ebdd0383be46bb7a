"""Notebook 09 on real runs: every dataset reader's items are named and split for the cross-fit as the run's loaders
hold them; the notebook analyses a finished multi-label run (RUN_DIR) headless and writes its files as the contract
says. (The browser test runs it once with RUN_DIR None on the embedded Fashion-MNIST.)"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tresnet_nb.config import RunConfig
from tresnet_nb.data import DATASETS, get_dataset
from tresnet_nb.model.load import load_model
from tresnet_nb.steps.data import open_data
from tresnet_nb.trust.items import fold_dls, plain_dl, pooled_features, split_items
from tresnet_nb.trust.label_issues import fold_indices

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model():
    """One network for every reader: the loaders and the pooled features do not depend on the head."""
    torch.manual_seed(0)
    return load_model("tresnet_m", weights=None, num_classes=None)


@pytest.mark.parametrize("dataset", sorted(DATASETS))
def test_every_reader_names_its_items_and_splits_them_for_the_cross_fit(dataset, model, tmp_path, monkeypatch):
    monkeypatch.setenv("TRESNET_NB_CACHE", str(tmp_path / "cache"))
    spec = get_dataset(dataset)
    root = None if not spec.needs_root else spec.write_fixture(tmp_path / "data")
    cfg = RunConfig.from_params(
        "09_error_analysis",
        preset="smoke",
        dataset=dataset,
        data_root=None if root is None else str(root),
        output_dir=str(tmp_path / "out"),
    )
    ds = spec.read(cfg.data_root)
    data = open_data(cfg, model, torch.device("cpu"), ds)
    train, valid = split_items(data, "train"), split_items(data, "valid")
    assert len(train) == len(data.dls.train.dataset) and len(valid) == len(data.dls.valid.dataset)
    assert train.split == "train" and valid.split == spec.eval_split
    for items, part in ((train, ds["train"]), (valid, ds[spec.eval_split])):
        if part.paths is not None:  # the original files (absolute), not the resized copies in the cache
            assert all(Path(r).is_absolute() and Path(r).is_file() for r in items.refs)
            assert not any(str(tmp_path / "cache") in r for r in items.refs)
            by_path = {str(Path(p).resolve()): i for i, p in enumerate(part.paths)}
            first = by_path[items.refs[0]]
        else:  # arrays: the index in the dataset's split
            first = int(items.refs[0])
        np.testing.assert_array_equal(np.asarray(part.labels[first]), items.labels[0])
    keep, held = fold_indices(train.labels, 2, seed=0)[1], fold_indices(train.labels, 2, seed=0)[0]
    folds = fold_dls(data, np.sort(keep), np.sort(held))
    assert len(folds.train.dataset) == len(keep) and len(folds.valid.dataset) == len(held)
    np.testing.assert_array_equal(folds.valid.dataset.labels.numpy(), train.labels[np.sort(held)])
    features = pooled_features(model, plain_dl(data, "valid"))
    assert features.shape == (len(valid), model.num_features) and np.isfinite(features).all()


def test_analysis_of_a_finished_multi_label_run(tmp_path, closed_hub, monkeypatch):
    from tresnet_nb.data import table
    from tresnet_nb.runner import run_notebooks
    from tresnet_nb.steps.job import config_from_cli, train_job

    monkeypatch.setenv("TRESNET_NB_CACHE", str(tmp_path / "cache"))
    root = table.write_fixture(tmp_path / "data", multi_label=True, per_class=8)
    # a byte-identical copy of one image under another name, with its labels: an exact duplicate to find; and a
    # near copy of another (enlarged by a third, saved again as JPEG at quality 70)
    lines = (root / "labels.csv").read_text().splitlines()
    first, second = lines[1].split(","), lines[2].split(",")
    shutil.copyfile(root / first[0], root / "images/copy.jpg")
    with Image.open(root / second[0]) as image:
        image.convert("RGB").resize((image.width * 4 // 3, image.height * 4 // 3), Image.BILINEAR).save(
            root / "images/near.jpg", quality=70
        )
    added = [",".join(["images/copy.jpg", *first[1:]]), ",".join(["images/near.jpg", *second[1:]])]
    (root / "labels.csv").write_text("\n".join([*lines, *added]) + "\n")
    run_dir = tmp_path / "run"
    train_job(config_from_cli("smoke", {"DATASET": "csv", "DATA_ROOT": str(root)}, str(run_dir)))
    out = tmp_path / "analysis"
    (outcome,) = run_notebooks(
        [ROOT / "notebooks" / "09_error_analysis.ipynb"], out, "smoke", {"RUN_DIR": str(run_dir), "FOLDS": 2}
    )
    assert outcome.status == "ok", outcome.error
    result = out / "09_error_analysis"
    cal = json.loads((result / "calibration.json").read_text())
    assert cal["method"] == "temperature per label" and len(cal["temperature"]) == 3
    n_eval = json.loads((run_dir / "metrics.json").read_text())["n_eval"]
    assert cal["n_eval"] == n_eval and [h["n_fit"] + h["n_eval"] for h in cal["halves"]] == [n_eval, n_eval]
    with open(result / "label_issues.csv") as f:
        rows = list(csv.DictReader(f))
    header = (result / "label_issues.csv").read_text().splitlines()[0]
    assert header == "path,split,given,suggested,score"
    scores = [float(r["score"]) for r in rows]
    assert scores == sorted(scores)
    assert all(Path(r["path"]).is_file() and r["split"] == "train" for r in rows)
    with open(result / "duplicates.csv") as f:
        pairs = list(csv.DictReader(f))
    # the contract's columns, then the two cosines behind similarity and the dHashes' distance
    assert list(pairs[0]) == [
        "path_a",
        "split_a",
        "path_b",
        "split_b",
        "similarity",
        "kind",
        "feature_similarity",
        "pixel_similarity",
        "hamming",
    ]
    assert pairs[0]["kind"] == "exact"  # exact copies rank first
    assert {Path(pairs[0]["path_a"]).name, Path(pairs[0]["path_b"]).name} == {Path(first[0]).name, "copy.jpg"}
    # the near copy is the most similar pair after the exact one (the two landed in train and the evaluation split)
    assert {Path(pairs[1]["path_a"]).name, Path(pairs[1]["path_b"]).name} == {Path(second[0]).name, "near.jpg"}
    assert pairs[1]["kind"] == "near" and {pairs[1]["split_a"], pairs[1]["split_b"]} == {"train", "valid"}
    assert all(float(r["similarity"]) < float(pairs[1]["similarity"]) for r in pairs[2:])  # others, if above the floor
    record = json.loads((result / "metrics.json").read_text())
    assert record["n_duplicates"] == len(pairs) and record["n_exact_duplicates"] == 1
    # the metric without leaked items exists unless every evaluation item has a copy in train
    assert (record["metric_value_deduplicated"] is None) == (record["n_eval_with_copy_in_train"] == record["n_eval"])
    assert set(record["step_seconds"]) == {"calibration", "label_issues", "duplicates", "gradcam"}
    assert record["notebook"] == "09_error_analysis" and record["run_dir"] == str(run_dir)
    assert record["n_label_issues"] == len(rows) and record["temperature"] == cal["temperature"]
    for name in ("reliability.png", "noise_rate.png", "duplicates.png"):
        assert (result / name).is_file(), name
    assert not any(p.name == "crossfit" for p in run_dir.iterdir())  # the analysed run's folder is left alone
