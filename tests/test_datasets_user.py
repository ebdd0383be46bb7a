"""The user's own data: an image folder (folder.py) and a CSV of paths and labels (table.py)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from tresnet_nb.data import folder, table
from tresnet_nb.data.base import DatasetError

CLASSES = ("cat", "dog", "fox")


# --- image folder -------------------------------------------------------------------------------------------------


def test_flat_folder_reads_every_extension_and_draws_a_stratified_holdout(tmp_path):
    root = folder.write_fixture(tmp_path / "f", per_class=5)
    ds = folder.read(root, holdout=0.2, seed=0)
    assert ds.class_names == CLASSES and ds.task == "single-label" and set(ds.splits) == {"train", "valid"}
    assert ds["valid"].class_counts(3).tolist() == [1, 1, 1] and ds["train"].class_counts(3).tolist() == [4, 4, 4]
    assert {p.suffix for p in ds["train"].paths + ds["valid"].paths} == set(folder.IMAGE_SUFFIXES)
    for split in ("train", "valid"):
        for i, item_id in enumerate(ds[split].ids):
            assert item_id.split("/")[0] == CLASSES[ds[split].labels[i]]
            assert ds[split].load(i).size == (24, 20)
    assert "valid" not in folder.read(root, holdout=0).splits


def test_split_folder_with_labelled_and_unlabelled_test(tmp_path):
    root = folder.write_fixture(tmp_path / "f", layout="split")
    ds = folder.read(root)
    assert [len(ds[s]) for s in ("train", "valid", "test")] == [9, 3, 3]
    assert ds["valid"].ids[0] == "valid/cat/cat_3.bmp" and ds["test"].labels.tolist() == [0, 1, 2]
    for p in list((root / "test").rglob("*.*")):
        p.rename(root / "test" / p.name)
    for d in (root / "test").iterdir():
        if d.is_dir():
            d.rmdir()
    ds = folder.read(root)
    assert ds["test"].labels is None and ds["test"].ids == ("test/cat_4.webp", "test/dog_4.webp", "test/fox_4.webp")


def test_split_folder_without_valid_draws_the_holdout(tmp_path):
    root = folder.write_fixture(tmp_path / "f", layout="split")
    shutil.rmtree(root / "valid")
    assert len(folder.read(root, holdout=0.34)["valid"]) == 3


def test_non_images_and_hidden_files_are_skipped_and_noted(tmp_path):
    root = folder.write_fixture(tmp_path / "f")
    (root / "cat" / "notes.txt").write_text("not a picture")
    (root / "dog" / ".DS_Store").write_bytes(b"\0")
    (root / ".ipynb_checkpoints").mkdir()
    shutil.copy(root / "cat" / "cat_0.jpg", root / "cat" / "CAT_UPPER.JPG")
    ds = folder.read(root, holdout=0)
    assert len(ds["train"]) == 16  # the upper-case .JPG counts
    assert any("skipped 2 files" in n and "'cat/notes.txt'" in n for n in ds.notes)


def test_folder_without_class_folders_is_an_error(tmp_path):
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "a.jpg").write_bytes(b"")
    with pytest.raises(DatasetError, match="no class folders in .*/f'; it holds 1 files but no sub-folders"):
        folder.read(tmp_path / "f")


def test_class_folder_without_images_is_named(tmp_path):
    root = folder.write_fixture(tmp_path / "f")
    (root / "owl").mkdir()
    (root / "owl" / "readme.md").write_text("soon")
    with pytest.raises(DatasetError, match=r"class folder .*owl' holds no images"):
        folder.read(root)


def test_valid_class_unknown_to_train_is_named(tmp_path):
    root = folder.write_fixture(tmp_path / "f", layout="split")
    (root / "valid" / "dog").rename(root / "valid" / "wolf")
    with pytest.raises(DatasetError, match=r"valid/wolf' is not one of the train classes \['cat', 'dog', 'fox'\]"):
        folder.read(root)


def test_test_folder_with_both_classes_and_loose_images_is_an_error(tmp_path):
    root = folder.write_fixture(tmp_path / "f", layout="split")
    shutil.copy(root / "train" / "cat" / "cat_0.jpg", root / "test" / "loose.jpg")
    with pytest.raises(DatasetError, match="holds both class folders and loose images"):
        folder.read(root)


# --- CSV ----------------------------------------------------------------------------------------------------------


def write_csv(root, text):
    (root / "labels.csv").write_text(text)


def test_single_label_csv(tmp_path):
    root = table.write_fixture(tmp_path / "t")
    ds = table.read(root, holdout=0.2, seed=0)
    assert ds.class_names == CLASSES and ds.task == "single-label"
    assert ds["valid"].class_counts(3).tolist() == [1, 1, 1] and len(ds["train"]) == 12
    assert ds["train"].paths[0] == root / ds["train"].ids[0] and ds["train"].load(0).size == (24, 20)
    assert table.read(root / "labels.csv", holdout=0)["train"].ids == table.read(root, holdout=0)["train"].ids


def test_multi_label_csv(tmp_path):
    root = table.write_fixture(tmp_path / "t", multi_label=True)
    ds = table.read(root, holdout=0)
    labels = ds["train"].labels
    assert ds.task == "multi-label" and ds.class_names == CLASSES
    assert labels.dtype == np.float32 and labels.shape == (15, 3) and labels.sum(1).max() == 2
    assert labels[1].tolist() == [1, 1, 0]  # images/cat_1.jpg,1,1,0


def test_capped_multi_label_split_keeps_positives_in_every_column(tmp_path):
    from tresnet_nb.data.highres import cap_items

    split = table.read(table.write_fixture(tmp_path / "t", multi_label=True), holdout=0)["train"]
    assert (split.labels.sum(0) > 0).all()
    for cap in (3, 4, 6):  # file order is cat, dog, fox: the first 3 rows have no fox
        capped = cap_items(split, cap, 3)
        assert len(capped) == cap and (capped.labels.sum(0) > 0).all(), capped.labels.tolist()
        assert list(capped.ids) == sorted(capped.ids, key=split.ids.index)  # file order kept


def test_multi_label_csv_trains_and_evaluates_with_bce(tmp_path):
    import torch
    from fastai.callback.progress import ProgressCallback
    from fastai.losses import BCEWithLogitsLossFlat

    from tresnet_nb import RunConfig, build_learner, data_config, fit, load_model, predict, seed_everything
    from tresnet_nb.data import get_dataset
    from tresnet_nb.data.highres import prepare_file_dls
    from tresnet_nb.evaluation.metrics import mean_average_precision, mean_column_auc
    from tresnet_nb.evaluation.scores import score

    root = table.write_fixture(tmp_path / "t", multi_label=True)
    spec = get_dataset("csv")
    ds = spec.read(root)
    assert ds.task == "multi-label"
    cfg = RunConfig.from_params(
        "ml", preset="smoke", dataset="csv", data_root=str(root), precision="fp32", output_dir=str(tmp_path / "run")
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
    learn = build_learner(cfg, dls, model, task=ds.task)  # the default multi-label loss
    assert isinstance(learn.loss_func, BCEWithLogitsLossFlat)
    learn.remove_cb(ProgressCallback)
    result = fit(learn, cfg)
    assert result.history["metric_names"] == ["train_loss", "valid_loss", "roc_auc", "mAP"]
    probs, targets = predict(learn)
    assert probs.shape == targets.shape == (len(ds["valid"]), 3) and 0 <= probs.min() and probs.max() <= 1
    p, t = probs.numpy(), targets.numpy()
    assert result.history["epochs"][-1][2] == pytest.approx(mean_column_auc(p, t), abs=1e-4)
    evaluation = score(probs, targets, ds.class_names, ds.task, "mean_roc_auc")
    assert evaluation.metric_name == "mean_roc_auc" and evaluation.metric_value == pytest.approx(mean_column_auc(p, t))
    assert evaluation.mean_ap == pytest.approx(mean_average_precision(p, t)) and evaluation.report is None


def test_split_column_overrides_the_holdout_and_test_may_be_unlabelled(tmp_path):
    root = table.write_fixture(tmp_path / "t")
    lines = (root / "labels.csv").read_text().splitlines()
    splits = ["train", "train", "valid", "train", "test"] * 3
    body = [
        f"{line},{s}" if s != "test" else f"{line.split(',')[0]},,test"
        for line, s in zip(lines[1:], splits, strict=True)
    ]
    write_csv(root, "\n".join([lines[0] + ",split", *body]) + "\n")
    ds = table.read(root, holdout=0.5)
    assert [len(ds[s]) for s in ("train", "valid", "test")] == [9, 3, 3] and ds["test"].labels is None


def test_integer_labels_sort_as_numbers(tmp_path):
    root = table.write_fixture(tmp_path / "t")
    lines = (root / "labels.csv").read_text().splitlines()
    numbers = {"cat": "2", "dog": "10", "fox": "1"}
    write_csv(root, "\n".join([lines[0], *(f"{p},{numbers[c]}" for p, c in (x.split(",") for x in lines[1:]))]))
    assert table.read(root, holdout=0).class_names == ("1", "2", "10")


def test_byte_order_mark_from_spreadsheets_is_ignored(tmp_path):
    root = table.write_fixture(tmp_path / "t")
    (root / "labels.csv").write_bytes(b"\xef\xbb\xbf" + (root / "labels.csv").read_bytes())
    assert table.read(root, holdout=0).class_names == CLASSES


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("file,label\nimages/cat_0.jpg,cat\n", r"columns \['file', 'label'\] but no 'path' column"),
        ("path,label\nimages/cat_0.jpg,cat\nimages/nope.jpg,dog\n", "line 3: image 'images/nope.jpg' not found"),
        ("path,label\nimages/cat_0.jpg,cat\nimages/cat_1.jpg,\n", "line 3: path 'images/cat_1.jpg' has an empty label"),
        (
            "path,cat,dog\nimages/cat_0.jpg,1,0\nimages/cat_1.jpg,1,yes\n",
            "line 3: path 'images/cat_1.jpg' has 'yes' in column 'dog'",
        ),
        (
            "path,label\nimages/cat_0.jpg,cat\nimages/cat_0.jpg,dog\n",
            "path 'images/cat_0.jpg' occurs on line 2 and again on line 3",
        ),
        (
            "path,label,split\nimages/cat_0.jpg,cat,training\n",
            r"line 2: split 'training' is not one of \['train', 'valid', 'test'\]",
        ),
        ("path,label\nimages/cat_0.jpg,cat,extra\n", "line 2 has 3 fields but the header path,label has 2"),
    ],
)
def test_bad_csv_is_named(tmp_path, text, message):
    root = table.write_fixture(tmp_path / "t")
    write_csv(root, text)
    with pytest.raises(DatasetError, match=message):
        table.read(root)


def test_missing_csv_names_the_layout(tmp_path):
    with pytest.raises(DatasetError, match=r"mine\.csv'. Expected layout: ROOT/labels\.csv"):
        table.read(tmp_path, csv="mine.csv")
