"""Kaggle submission writers and checks, and the two competition metrics against scikit-learn."""

from __future__ import annotations

import csv
from types import SimpleNamespace

import numpy as np
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from tresnet_nb.data import herbarium2020 as herb
from tresnet_nb.data import plant_pathology as pp
from tresnet_nb.evaluation import metrics
from tresnet_nb.evaluation import submissions as sub


def rows(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


# --- Herbarium 2020 -----------------------------------------------------------------------------------------------


def test_herbarium_submission_gives_original_category_ids(tmp_path):
    ds = herb.read(herb.write_fixture(tmp_path / "h"))
    valid = ds["valid"]
    path = sub.write_herbarium_submission(tmp_path / "s.csv", valid.ids, valid.labels, herb.category_ids(ds))
    table = rows(path)
    assert table[0] == ["Id", "Predicted"] and [r[0] for r in table[1:]] == list(valid.ids)
    truth = {
        str(a["image_id"]): a["category_id"]
        for a in herb.load_metadata(tmp_path / "h" / "nybg2020" / "train" / "metadata.json")["annotations"]
    }
    assert [int(r[1]) for r in table[1:]] == [truth[i] for i in valid.ids]
    test = ds["test"]
    pred = np.arange(len(test)) % 5
    path = sub.write_herbarium_submission(tmp_path / "t.csv", test.ids, pred, herb.category_ids(ds), test.ids)
    assert [int(r[1]) for r in rows(path)[1:]] == [[3, 17, 911, 5120, 23004][k] for k in pred]
    assert sub.check_submission(path, test.ids, sub.HERBARIUM_COLUMNS) == len(test)


def test_herbarium_submission_errors_name_the_ids():
    ids = np.array([3, 17, 23004])
    with pytest.raises(sub.SubmissionError, match=r"1 ids occur more than once, e.g. \['0'\]"):
        sub.write_herbarium_submission("x.csv", ["0", "1", "0"], np.array([0, 1, 2]), ids)
    with pytest.raises(sub.SubmissionError, match=r"1 expected ids are missing \(e.g. \['2'\]\)"):
        sub.write_herbarium_submission("x.csv", ["0", "1"], np.array([0, 1]), ids, expected_ids=["0", "1", "2"])
    with pytest.raises(sub.SubmissionError, match="test id '1' has class index 3, outside 0..2"):
        sub.write_herbarium_submission("x.csv", ["0", "1"], np.array([0, 3]), ids)
    with pytest.raises(sub.SubmissionError, match=r"probs.argmax\(1\)"):
        sub.write_herbarium_submission("x.csv", ["0", "1"], np.zeros((2, 3)), ids)


# --- Plant Pathology 2020 -----------------------------------------------------------------------------------------


def test_plant_pathology_submission_matches_the_sample(tmp_path):
    root = pp.write_fixture(tmp_path / "p")
    test = pp.read(root)["test"]
    probs = np.random.default_rng(0).random((len(test), 4))
    path = sub.write_plant_pathology_submission(tmp_path / "s.csv", test.ids, probs, expected_ids=test.ids)
    table = rows(path)
    assert ",".join(table[0]) == "image_id,healthy,multiple_diseases,rust,scab"
    assert [r[0] for r in table[1:]] == [r[0] for r in rows(root / "test.csv")[1:]]
    assert np.array([[float(v) for v in r[1:]] for r in table[1:]]).tolist() == probs.tolist()  # no rounding
    assert sub.check_submission(path, root / "sample_submission.csv", sub.PLANT_PATHOLOGY_COLUMNS) == len(test)


@pytest.mark.parametrize(("value", "shown"), [(1.5, "1.5"), (-0.1, "-0.1"), (np.nan, "nan")])
def test_plant_pathology_probabilities_outside_0_1_are_named(value, shown):
    probs = np.full((2, 4), 0.5)
    probs[1, 2] = value
    with pytest.raises(sub.SubmissionError, match=f"test id 'b' has {shown} in column 'rust'"):
        sub.write_plant_pathology_submission("x.csv", ["a", "b"], probs)
    with pytest.raises(sub.SubmissionError, match=r"expected \(2, 4\)"):
        sub.write_plant_pathology_submission("x.csv", ["a", "b"], probs[:, :3])


def test_check_submission_names_what_differs(tmp_path):
    root = pp.write_fixture(tmp_path / "p")
    sample = root / "sample_submission.csv"
    table = rows(sample)
    bad = tmp_path / "bad.csv"

    def check(t):
        with open(bad, "w", newline="") as f:
            csv.writer(f).writerows(t)
        sub.check_submission(bad, sample, sub.PLANT_PATHOLOGY_COLUMNS)

    with pytest.raises(sub.SubmissionError, match="has header image_id,healthy,rust,scab; expected image_id,healthy"):
        check([[r[0], r[1], r[3], r[4]] for r in table])
    with pytest.raises(sub.SubmissionError, match=r"1 expected ids are missing \(e.g. \['Test_7'\]\) and 0 are not"):
        check(table[:-1])
    with pytest.raises(sub.SubmissionError, match=r"1 are not expected \(e.g. \['Test_99'\]\)"):
        check([*table, ["Test_99", 0, 0, 0, 0]])
    with pytest.raises(sub.SubmissionError, match="line 3: column 'rust' is empty"):
        check([*table[:2], ["Test_1", 0.1, 0.2, "", 0.3], *table[3:]])


# --- metrics against scikit-learn ---------------------------------------------------------------------------------


def test_mean_column_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    targets = np.eye(4)[rng.integers(0, 4, 200)]
    probs = np.round(rng.random((200, 4)) * 0.6 + targets * 0.4, 1)  # rounding makes many ties
    expected = np.mean([roc_auc_score(targets[:, j], probs[:, j]) for j in range(4)])
    assert metrics.mean_column_auc(probs, targets) == pytest.approx(expected, abs=1e-12)
    aucs = metrics.column_aucs(probs, targets, pp.LABEL_COLUMNS)
    assert list(aucs) == list(pp.LABEL_COLUMNS)
    assert aucs["rust"] == pytest.approx(roc_auc_score(targets[:, 2], probs[:, 2]))
    assert metrics.mean_column_auc(targets, targets) == 1.0 and metrics.mean_column_auc(-targets, targets) == 0.0


def test_mean_column_auc_names_a_column_with_one_class():
    targets = np.array([[1, 0], [0, 0], [1, 0]])
    with pytest.raises(ValueError, match="column 'multiple_diseases' has only negative targets"):
        metrics.mean_column_auc(np.zeros((3, 2)), targets, ["healthy", "multiple_diseases"])


def test_per_epoch_roc_auc_skips_a_column_without_positives():
    from fastai.metrics import AccumMetric
    from fastai.torch_core import to_detach

    from tresnet_nb.recipes import default_recipe, get_recipe
    from tresnet_nb.train.learner import task_loss_and_metrics

    # a capped validation split where 'multiple_diseases' (column 1) has no positive
    targets = np.array([[1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1], [1, 0, 0, 0], [0, 0, 1, 0]], dtype=np.float32)
    probs = np.random.default_rng(0).random(targets.shape)
    defined = [0, 2, 3]
    expected = np.mean([roc_auc_score(targets[:, j], probs[:, j]) for j in defined])
    assert metrics.mean_column_auc(probs, targets, undefined="skip") == pytest.approx(expected)
    assert list(metrics.column_aucs(probs, targets, pp.LABEL_COLUMNS, undefined="skip")) == ["healthy", "rust", "scab"]
    assert np.isnan(metrics.mean_column_auc(probs[:, 1:2], targets[:, 1:2], undefined="skip"))  # no column defined
    # class indices (single-label) are scored as their one-hot columns
    assert metrics.mean_column_auc(probs, targets.argmax(1), undefined="skip") == pytest.approx(expected)
    with pytest.raises(ValueError, match="undefined='ignore'; choose 'raise' or 'skip'"):
        metrics.mean_column_auc(probs, targets, undefined="ignore")
    import torch

    recipe = get_recipe(default_recipe(False))
    for task, logits, y in [
        ("multi-label", torch.randn(5, 4), torch.from_numpy(targets)),
        ("single-label", torch.randn(5, 4), torch.from_numpy(targets.argmax(1))),
    ]:
        _, fastai_metrics = task_loss_and_metrics(task, recipe, metric="mean_roc_auc")
        (auc,) = [m for m in fastai_metrics if isinstance(m, AccumMetric) and m.name == "roc_auc"]
        auc.reset()
        auc.accumulate(SimpleNamespace(pred=logits, y=y, to_detach=to_detach))  # what a Learner hands a metric
        act = torch.sigmoid(logits) if task == "multi-label" else torch.softmax(logits, 1)
        want = np.mean([roc_auc_score(targets[:, j], act[:, j].numpy()) for j in defined])
        assert auc.value == pytest.approx(want, abs=1e-6)


def test_final_roc_auc_leaves_out_a_column_without_positives_and_says_so():
    import torch

    from tresnet_nb.evaluation.scores import score

    probs = torch.softmax(torch.randn(12, 4, generator=torch.Generator().manual_seed(0)), 1)
    targets = torch.tensor([0, 0, 2, 3] * 3)  # no multiple_diseases
    with pytest.warns(UserWarning, match=r"over 3 of 4 columns: \['multiple_diseases'\] have a single class"):
        evaluation = score(probs, targets, pp.LABEL_COLUMNS, "single-label", "mean_roc_auc")
    one_hot = np.eye(4)[targets.numpy()]
    expected = np.mean([roc_auc_score(one_hot[:, j], probs[:, j].numpy()) for j in (0, 2, 3)])
    assert list(evaluation.extras()["column_auc"]) == ["healthy", "rust", "scab"]
    assert evaluation.metric_value == pytest.approx(expected)
    with pytest.raises(ValueError, match="no column of .* has both positive and negative targets"):
        score(probs[:, :1], torch.ones(12, 1), ["healthy"], "multi-label")


def test_herbarium_evaluation_holds_one_macro_f1_the_kaggle_one():
    import torch

    from tresnet_nb.evaluation.scores import score

    rng = np.random.default_rng(2)
    n_classes = 40  # of which only 0..9 occur in the targets and 0..11 in the predictions
    targets = rng.integers(0, 10, 200)
    pred = np.where(rng.random(200) < 0.5, targets, rng.integers(0, 12, 200))
    probs = torch.from_numpy(np.eye(n_classes)[pred] * 0.9 + 0.1 / n_classes)
    evaluation = score(
        probs, torch.from_numpy(targets), [f"s{k}" for k in range(n_classes)], "single-label", "macro_f1"
    )
    kaggle = f1_score(targets, pred, average="macro")  # labels=None: those in truth or predictions
    every_class = f1_score(targets, pred, labels=np.arange(n_classes), average="macro", zero_division=0)
    assert abs(kaggle - every_class) > 0.1  # the case where the two definitions part
    extras = evaluation.extras()
    assert evaluation.metric_name == "macro_f1" and evaluation.metric_value == pytest.approx(kaggle)
    assert extras["macro_f1"] == evaluation.metric_value == evaluation.report.macro_f1
    assert [k for k in extras if "f1" in k] == ["macro_f1"]


def test_macro_f1_matches_sklearn():
    rng = np.random.default_rng(1)
    targets = rng.integers(0, 6, 300)  # class 6 and 7 never occur; class 7 is sometimes predicted
    pred = np.where(rng.random(300) < 0.6, targets, rng.integers(0, 8, 300))
    assert metrics.macro_f1(pred, targets, 9) == pytest.approx(f1_score(targets, pred, average="macro"))
    scores = np.eye(9)[pred] + 0.01
    assert metrics.macro_f1(scores, targets, 9) == metrics.macro_f1(pred, targets, 9)
    with pytest.raises(ValueError, match="pred range over 0..7, outside the classes 0..6"):
        metrics.macro_f1(pred, targets, 7)


# --- end to end: train on a fixture, predict its unlabelled test split, write and check the submission -----------


@pytest.mark.parametrize(("dataset", "task"), [("herbarium2020", "single-label"), ("plant_pathology", "single-label")])
def test_a_trained_model_writes_a_valid_submission_for_the_test_split(tmp_path, dataset, task):
    import torch
    from fastai.callback.progress import ProgressCallback

    from tresnet_nb import RunConfig, build_learner, data_config, fit, load_model, predict, seed_everything
    from tresnet_nb.data import get_dataset
    from tresnet_nb.data.highres import predict_dl, prepare_file_dls

    spec = get_dataset(dataset)
    ds = spec.read(spec.write_fixture(tmp_path / "data"))
    cfg = RunConfig.from_params("k", preset="smoke", dataset=dataset, precision="fp32", output_dir=str(tmp_path / "o"))
    seed_everything(cfg.seed)
    model = load_model(cfg.arch, cfg.weights, num_classes=len(ds.class_names))
    cpu, data_cfg, cache = torch.device("cpu"), data_config(model, 64), tmp_path / "cache"
    dls = prepare_file_dls(ds, spec.eval_split, 64, 8, data_cfg, cpu, tmp_path / "o", cache_dir=cache)
    learn = build_learner(cfg, dls, model, task=task)
    learn.remove_cb(ProgressCallback)
    fit(learn, cfg)
    test = ds["test"]
    assert not test.labelled
    probs, _ = predict(learn, dl=predict_dl(test, 64, 8, data_cfg, cpu, cache_dir=cache, num_workers=0), tta=True)
    assert probs.shape == (len(test), len(ds.class_names))
    path = sub.write_submission(dataset, tmp_path / "submission.csv", test.ids, probs.numpy(), ds.meta, test.ids)
    columns = sub.HERBARIUM_COLUMNS if dataset == "herbarium2020" else sub.PLANT_PATHOLOGY_COLUMNS
    assert sub.check_submission(path, test.ids, columns) == len(test)
    table = rows(path)
    if dataset == "herbarium2020":  # category ids, not class indices
        predicted = [int(r[1]) for r in table[1:]]
        assert predicted == [int(ds.meta["category_ids"][i]) for i in probs.argmax(1).tolist()]
    else:  # softmax probabilities, one per column, as Kaggle scores them (column-wise ROC-AUC)
        assert np.allclose([[float(v) for v in r[1:]] for r in table[1:]], probs.numpy())
        assert np.allclose(probs.sum(1).numpy(), 1.0, atol=1e-5)


def test_write_submission_refuses_datasets_without_a_format(tmp_path):
    with pytest.raises(sub.SubmissionError, match="'cifar10' has no Kaggle submission format"):
        sub.write_submission("cifar10", tmp_path / "s.csv", ["a"], np.zeros((1, 10)))
