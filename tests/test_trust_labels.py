"""Label errors and Grad-CAM: planted label flips rank first among cleanlab's suspects with the right given and
suggested names; folds of a cross-fit cover every item once, stratified; Grad-CAM maps have the input's shape and
depend on the class asked about."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tresnet_nb.trust.items import Items
from tresnet_nb.trust.label_issues import find_label_issues, fold_indices

NAMES = ("ant", "bee", "cat", "dog")


def noisy_set(n: int = 400, flips: int = 20, seed: int = 0):
    """True labels, given labels with ``flips`` planted flips, and out-of-sample probabilities of a decent model
    (about 95% right)."""
    rng = np.random.default_rng(seed)
    true = rng.integers(0, len(NAMES), n)
    given = true.copy()
    flipped = rng.choice(n, flips, replace=False)
    given[flipped] = (true[flipped] + rng.integers(1, len(NAMES), flips)) % len(NAMES)
    logits = rng.normal(0, 1, (n, len(NAMES)))
    logits[np.arange(n), true] += 4.0
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return true, given, flipped, probs


def test_planted_flips_rank_first_with_their_given_and_suggested_labels():
    true, given, flipped, probs = noisy_set()
    items = Items("train", tuple(f"/data/{i}.png" for i in range(len(given))), given)
    found = find_label_issues(items, probs, NAMES, multi_label=False)
    table = found.table
    assert list(table.columns[:5]) == ["path", "split", "given", "suggested", "score"]
    assert (np.diff(table.score.to_numpy()) >= 0).all()  # most suspect (lowest score) first
    top = set(table.item.head(len(flipped)))
    assert len(top & set(flipped)) >= 0.8 * len(flipped)
    first = table.iloc[0]
    i = int(first["item"])
    assert first.path == f"/data/{i}.png" and first.split == "train"
    assert first.given == NAMES[given[i]] and first.suggested == NAMES[int(probs[i].argmax())]
    # the estimated noise rate per class is about the planted share (20 flips over 400 items: 5%)
    assert list(found.noise_rate.index) == list(NAMES)
    assert 0.0 < found.noise_rate.mean() < 0.15


def test_clean_labels_flag_few_items():
    true, _, _, probs = noisy_set(flips=0)
    items = Items("train", tuple(map(str, range(len(true)))), true)
    assert len(find_label_issues(items, probs, NAMES, multi_label=False).table) <= 0.02 * len(true)


def test_multi_label_issues_name_label_sets():
    rng = np.random.default_rng(3)
    n = 300
    truth = (rng.random((n, 3)) < 0.4).astype(np.float32)
    truth[truth.sum(1) == 0, 0] = 1
    probs = np.clip(truth * 0.85 + rng.random((n, 3)) * 0.1, 0.01, 0.99)
    given = truth.copy()
    flipped = rng.choice(n, 15, replace=False)
    given[flipped, 1] = 1 - given[flipped, 1]
    given[given.sum(1) == 0, 2] = 1
    items = Items("train", tuple(map(str, range(n))), given)
    found = find_label_issues(items, probs, ("a", "b", "c"), multi_label=True)
    assert len(set(found.table.item.head(15)) & set(flipped)) >= 12
    assert all(set(g.split(";")) <= {"a", "b", "c"} for g in found.table.given)


def test_bad_probabilities_are_refused():
    items = Items("train", ("0", "1"), np.array([0, 1]))
    with pytest.raises(ValueError, match="finite out-of-sample probabilities for all 2 items"):
        find_label_issues(items, np.array([[0.5, 0.5], [np.nan, np.nan]]), ("a", "b"), False)


def test_folds_cover_every_item_once_and_keep_the_class_shares():
    labels = np.repeat(np.arange(4), [40, 20, 20, 8])
    parts = fold_indices(labels, 4, seed=0)
    joined = np.concatenate(parts)
    assert sorted(joined.tolist()) == list(range(len(labels)))
    for part in parts:
        assert len(part) in (22, 23)
        assert np.bincount(labels[part], minlength=4)[0] == 10 and np.bincount(labels[part], minlength=4)[3] == 2
    with pytest.raises(ValueError, match="FOLDS must be between 2"):
        fold_indices(labels, 1, seed=0)


def test_gradcam_maps_have_the_input_shape_and_depend_on_the_class():
    from tresnet_nb.model.load import load_model
    from tresnet_nb.trust.gradcam import gradcam_maps, plot_gradcam_grid, target_layer

    torch.manual_seed(0)
    model = load_model("tresnet_m", weights=None, num_classes=3)
    for m in model.modules():  # timm zero-initialises the blocks' last BN: give the net some signal to explain
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
    assert target_layer(model) is model.body.layer4
    x = torch.randn(2, 3, 64, 64)
    maps = gradcam_maps(model, x, [1, 1])
    assert maps.shape == (2, 64, 64) and maps.min() >= 0 and maps.max() <= 1 and maps.max() > 0
    other = gradcam_maps(model, x, [2, 2])
    assert np.abs(maps - other).max() > 0.05
    # the classes' evidence differs: a class the random head scores far below the others has none here
    assert gradcam_maps(model, x, [0, 0]).max() == 0
    assert model.training  # left as found
    import timm

    resnet = timm.create_model("resnet18", num_classes=3)
    assert target_layer(resnet) is resnet.layer4
    with pytest.raises(ValueError, match="one target class per image"):
        gradcam_maps(model, x, [0])
    images = (np.random.default_rng(0).random((2, 64, 64, 3)) * 255).astype(np.uint8)
    assert plot_gradcam_grid(images, maps, ["a", "b"], "/tmp/tnb_gradcam_test.png").stat().st_size > 1000


def test_a_missing_package_names_the_extra_that_installs_it(monkeypatch):
    import sys

    from tresnet_nb.trust import need

    monkeypatch.setitem(sys.modules, "cleanlab", None)  # as if not installed
    with pytest.raises(ImportError, match=r"Finding label errors needs cleanlab.*pip install 'tresnet-nb\[trust\]'"):
        need("cleanlab", "Finding label errors")
    items = Items("train", ("0", "1"), np.array([0, 1]))
    with pytest.raises(ImportError, match="tresnet-nb\\[trust\\]"):
        find_label_issues(items, np.array([[0.9, 0.1], [0.2, 0.8]]), ("a", "b"), False)
