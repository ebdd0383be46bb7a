"""Plant Pathology 2020 reader: the CSVs, the one-hot label matrix, holdout, and named errors."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from tresnet_nb.data import plant_pathology as pp
from tresnet_nb.data.base import DatasetError

HEADER = "image_id,healthy,multiple_diseases,rust,scab"


@pytest.fixture
def root(tmp_path):
    return pp.write_fixture(tmp_path / "plants")


def rows(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def write_rows(path, table):
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(table)


def test_fixture_is_in_the_official_format(root):
    assert (root / "train.csv").read_text().splitlines()[0] == HEADER
    assert (root / "sample_submission.csv").read_text().splitlines()[0] == HEADER
    assert rows(root / "test.csv")[:2] == [["image_id"], ["Test_0"]]
    assert (root / "images" / "Train_0.jpg").read_bytes()[:2] == b"\xff\xd8"
    classes = [r[1:].index("1") for r in rows(root / "train.csv")[1:]]
    assert np.bincount(classes).tolist() == [6, 3, 7, 6]  # multiple_diseases is rare but present


def test_read_counts_labels_and_test_order(root):
    ds = pp.read(root)
    # one class per row: single-label by default, the class index being the column that holds the 1
    assert ds.task == "single-label" and ds.class_names == ("healthy", "multiple_diseases", "rust", "scab")
    assert len(ds["train"]) + len(ds["valid"]) == 22 and len(ds["test"]) == 8
    for split in ("train", "valid"):
        assert ds[split].labels.dtype == np.int64
    assert ds["test"].labels is None
    assert ds["test"].ids == tuple(r[0] for r in rows(root / "test.csv")[1:])
    assert ds["test"].paths[0] == root / "images" / "Test_0.jpg"
    truth = {r[0]: r[1:].index("1") for r in rows(root / "train.csv")[1:]}
    assert ds["train"].labels.tolist() == [truth[i] for i in ds["train"].ids]


def test_multi_label_option_keeps_the_one_hot_matrix_and_the_same_split(root):
    single, multi = pp.read(root), pp.read(root, task="multi-label")
    assert multi.task == "multi-label"
    for split in ("train", "valid"):
        labels = multi[split].labels
        assert labels.dtype == np.float32 and labels.shape[1] == 4 and (labels.sum(1) == 1).all()
        assert multi[split].ids == single[split].ids and labels.argmax(1).tolist() == single[split].labels.tolist()
    with pytest.raises(ValueError, match=r"task 'multilabel'.*choose one of \('single-label', 'multi-label'\)"):
        pp.read(root, task="multilabel")


def test_holdout_is_stratified_and_holds_out_the_rare_class(root):
    ds = pp.read(root, holdout=0.2, seed=0)
    assert not set(ds["train"].ids) & set(ds["valid"].ids)
    # round(0.2 * n) of each class, at least one: 6, 3, 7, 6 -> 1, 1, 1, 1
    assert ds["valid"].class_counts(4).tolist() == [1, 1, 1, 1]
    assert ds["train"].class_counts(4).tolist() == [5, 2, 6, 5]
    assert pp.read(root, holdout=0.2, seed=0)["valid"].ids == ds["valid"].ids
    assert "valid" not in pp.read(root, holdout=0).splits


def test_missing_csv_names_it_and_the_layout(root):
    (root / "test.csv").unlink()
    with pytest.raises(DatasetError, match=r"test\.csv not found: .*Expected layout: ROOT/train\.csv"):
        pp.read(root)


def test_missing_and_extra_columns_are_named_with_the_header(root):
    table = rows(root / "train.csv")
    write_rows(root / "train.csv", [[*r[:4], r[4]] if i else [*r[:4], "scabs"] for i, r in enumerate(table)])
    with pytest.raises(DatasetError, match=rf"missing \['scab'\], extra \['scabs'\]; expected the header {HEADER}"):
        pp.read(root)


def test_reordered_columns_are_read_by_name(root):
    table = rows(root / "train.csv")
    write_rows(root / "train.csv", [[r[0], r[4], r[3], r[2], r[1]] for r in table])
    multi = pp.read(root, holdout=0, task="multi-label")["train"].labels
    assert multi.tolist() == [[float(v) for v in r[1:]] for r in table[1:]]
    assert pp.read(root, holdout=0)["train"].labels.tolist() == [r[1:].index("1") for r in table[1:]]


def test_row_that_is_not_one_hot_is_named_with_its_values(root):
    table = rows(root / "train.csv")
    table[3][1:] = ["1", "0", "1", "0"]
    write_rows(root / "train.csv", table)
    with pytest.raises(DatasetError, match="line 4: image_id 'Train_2' has .*'healthy': '1'.*'rust': '1'"):
        pp.read(root)


def test_value_other_than_0_or_1_is_named(root):
    table = rows(root / "train.csv")
    table[5][3] = "0.7"
    write_rows(root / "train.csv", table)
    with pytest.raises(DatasetError, match="line 6: image_id 'Train_4' has '0.7' in column 'rust'"):
        pp.read(root)


@pytest.mark.parametrize("name", ["train.csv", "test.csv"])
def test_duplicate_image_id_is_named(root, name):
    table = rows(root / name)
    table.append(table[1])
    write_rows(root / name, table)
    with pytest.raises(DatasetError, match=f"image_id {table[1][0]!r} occurs on line 2 and again on line"):
        pp.read(root)


def test_image_id_without_image_is_named(root):
    (root / "images" / "Test_3.jpg").unlink()
    with pytest.raises(DatasetError, match=r"image_id 'Test_3' has no image file .*Test_3\.jpg"):
        pp.read(root)


def test_unreadable_csv_is_named(root):
    (root / "train.csv").write_bytes(HEADER.encode() + b"\nTrain_0,\xff\xfe,0,0,0\n")
    with pytest.raises(DatasetError, match=r"train\.csv' is not a readable UTF-8 CSV"):
        pp.read(root)
    (root / "train.csv").write_text(HEADER + "\nTrain_0,1,0,0,0,7\n")
    with pytest.raises(DatasetError, match="line 2 has 6 fields but the header"):
        pp.read(root)


def break_a_row_and_an_image(root):
    """Make train.csv line 4 (Train_2) two-hot and cut the last quarter off Test_5.jpg (the headers stay, the coded
    blocks end early); returns the truncated image's path."""
    table = rows(root / "train.csv")
    table[3][1:] = ["1", "0", "1", "0"]
    write_rows(root / "train.csv", table)
    image = root / "images" / "Test_5.jpg"
    data = image.read_bytes()
    image.write_bytes(data[: len(data) * 3 // 4])
    return image


def test_verify_reports_a_bad_row_and_a_truncated_image_in_one_pass(root):
    from tresnet_nb.data.verify import verify

    image = break_a_row_and_an_image(root)
    report = verify("plant_pathology", root)
    text = report.text()
    assert not report.ok and len(report.problems) == 2, text
    assert "line 4: image_id 'Train_2' has" in text and "exactly one 1" in text
    assert f"{image}: OSError" in text and "truncated" in text


def test_data_verify_command_names_both_problems_and_exits_non_zero(root):
    import subprocess
    import sys

    image = break_a_row_and_an_image(root)
    args = [sys.executable, "-m", "tresnet_nb", "data", "verify", "plant_pathology", "--root", str(root)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "2 problem(s)" in done.stdout and "image_id 'Train_2'" in done.stdout and str(image) in done.stdout


def test_default_config_trains_single_label_with_cross_entropy_and_reports_roc_auc(tmp_path):
    import torch
    from fastai.callback.progress import ProgressCallback
    from fastai.losses import CrossEntropyLossFlat

    from tresnet_nb import RunConfig, build_learner, data_config, fit, load_model, predict, seed_everything
    from tresnet_nb.data import get_dataset
    from tresnet_nb.data.highres import prepare_file_dls
    from tresnet_nb.evaluation.metrics import mean_column_auc
    from tresnet_nb.evaluation.scores import score

    spec = get_dataset("plant_pathology")
    assert (spec.task, spec.metric) == ("single-label", "mean_roc_auc")
    ds = spec.read(spec.write_fixture(tmp_path / "pp"))
    cfg = RunConfig.from_params(
        "pp", preset="smoke", dataset="plant_pathology", precision="fp32", output_dir=str(tmp_path / "run")
    )
    seed_everything(cfg.seed)
    model = load_model(cfg.arch, cfg.weights, num_classes=len(ds.class_names))
    dls = prepare_file_dls(
        ds,
        spec.eval_split,
        64,
        8,
        data_config(model, 64),
        torch.device("cpu"),
        tmp_path / "run",
        max_items=cfg.max_items,
        cache_dir=tmp_path / "c",
    )
    learn = build_learner(cfg, dls, model, task=ds.task)
    assert isinstance(learn.loss_func, CrossEntropyLossFlat)
    learn.remove_cb(ProgressCallback)
    result = fit(learn, cfg)
    assert result.history["metric_names"] == ["train_loss", "valid_loss", "accuracy", "roc_auc"]
    probs, targets = predict(learn)
    assert probs.shape == (len(ds["valid"]), 4) and torch.allclose(probs.sum(1), torch.ones(len(probs)))  # softmax
    one_hot = torch.nn.functional.one_hot(targets, 4).numpy()
    roc_auc = mean_column_auc(probs.numpy(), one_hot)
    assert result.history["epochs"][-1][3] == pytest.approx(roc_auc, abs=1e-4)  # per epoch: from softmax, per column
    evaluation = score(probs, targets, ds.class_names, ds.task, spec.metric)
    assert evaluation.metric_name == "mean_roc_auc" and evaluation.metric_value == pytest.approx(roc_auc)
    assert list(evaluation.extras()["column_auc"]) == list(pp.LABEL_COLUMNS) and evaluation.report is not None


def test_verify_still_opens_every_image_when_the_reader_has_to_stop(root):
    from tresnet_nb.data.verify import verify

    image = break_a_row_and_an_image(root)
    table = rows(root / "train.csv")
    write_rows(root / "train.csv", [["image_id", "healthy", "multiple_diseases", "rust", "scabs"], *table[1:]])
    report = verify("plant_pathology", root)
    assert len(report.problems) == 2, report.text()  # the header stops the reader; the image is still named
    assert "missing ['scab'], extra ['scabs']" in report.problems[0] and str(image) in report.problems[1]
    assert "every image file under" in report.text()
