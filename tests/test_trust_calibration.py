"""Calibration: temperature scaling fitted on one half of the evaluation items lowers ECE and NLL of an over-confident
model on the other half (cross-fitted: each half by the other's temperature); the metrics agree with their definitions; predict and the export sidecars use the
temperature a model carries."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tresnet_nb.trust.calibration import (
    brier,
    calibrate,
    calibration_split,
    ece,
    fit_temperature,
    nll,
    scaled_probs,
    to_logits,
)


def overconfident(n: int = 2000, classes: int = 5, sharpen: float = 3.0, seed: int = 0):
    """Targets drawn from softmax(z) (so softmax(z) is calibrated) and the probabilities of a model that reports
    softmax(sharpen * z): over-confident by exactly a temperature of ``sharpen``."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, (n, classes))
    true = scaled_probs(z, 1.0, False)
    targets = np.array([rng.choice(classes, p=p) for p in true])
    return scaled_probs(z * sharpen, 1.0, False), targets


def test_temperature_scaling_undoes_over_confidence_on_the_half_it_was_not_fitted_on():
    probs, targets = overconfident()
    cal = calibrate(probs, targets, multi_label=False, seed=0)
    assert cal.temperature == pytest.approx(3.0, rel=0.15)  # the sharpening it has to undo
    assert cal.ece_after < cal.ece_before / 2
    assert cal.nll_after < cal.nll_before
    assert cal.brier_after < cal.brier_before
    first, second = np.array(cal.first_half), np.array(cal.second_half)
    assert set(first).isdisjoint(second) and len(first) + len(second) == len(targets)
    assert abs(len(first) - len(second)) <= 5  # halves per class
    assert cal.n_eval == len(targets) and cal.n_fit == max(len(first), len(second))
    # cross-fitted: each half is scaled by the temperature fitted on the other half, never by its own
    logits = to_logits(probs, False)
    for half, fit, held in ((cal.halves[0], first, second), (cal.halves[1], second, first)):
        t = fit_temperature(logits[fit], targets[fit], False)
        assert half["temperature"] == pytest.approx(t) and (half["n_fit"], half["n_eval"]) == (len(fit), len(held))
        np.testing.assert_allclose(cal.after[held], scaled_probs(logits[held], t, False))
        assert half["nll_after"] == pytest.approx(nll(cal.after[held], targets[held], False))
        assert half["nll_after"] < half["nll_before"]  # each half on its own, too
    own = scaled_probs(logits[second], fit_temperature(logits[second], targets[second], False), False)
    assert not np.allclose(cal.after[second], own)
    # the numbers are over every item so reported; the kept temperature is fitted on all of them
    assert cal.ece_before == pytest.approx(ece(probs, targets, False))
    assert cal.nll_after == pytest.approx(nll(cal.after, targets, False))
    assert cal.temperature == pytest.approx(fit_temperature(logits, targets, False))
    record = cal.to_dict()
    for key in (
        "method",
        "temperature",
        "ece_before",
        "ece_after",
        "nll_before",
        "nll_after",
        "brier_before",
        "brier_after",
        "n_bins",
        "n_fit",
        "n_eval",
    ):
        assert key in record
    assert record["n_bins"] == 15 and "after" not in record
    json.dumps(record)  # calibration.json is plain JSON


def test_a_calibrated_model_gets_a_temperature_near_one():
    rng = np.random.default_rng(1)
    z = rng.normal(0, 1.5, (3000, 4))
    p = scaled_probs(z, 1.0, False)
    targets = np.array([rng.choice(4, p=row) for row in p])
    assert fit_temperature(to_logits(p, False), targets, False) == pytest.approx(1.0, abs=0.1)


def test_metrics_match_their_definitions_on_a_hand_computed_case():
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.8, 0.2]])
    targets = np.array([0, 1, 1, 0])
    assert nll(probs, targets, False) == pytest.approx(-np.mean(np.log([0.9, 0.4, 0.7, 0.8])))
    assert brier(probs, targets, False) == pytest.approx(np.mean([0.02, 0.72, 0.18, 0.08]))
    # top confidences 0.9, 0.6, 0.7, 0.8 fall in four bins; right, wrong, right, right
    assert ece(probs, targets, False) == pytest.approx(np.mean([0.1, 0.6, 0.3, 0.2]))


def test_multi_label_gets_one_temperature_per_label():
    rng = np.random.default_rng(2)
    z = rng.normal(0, 2, (3000, 3))
    targets = (rng.random(z.shape) < 1 / (1 + np.exp(-z))).astype(np.float32)
    sharpen = np.array([1.0, 2.5, 4.0])
    probs = 1 / (1 + np.exp(-z * sharpen))
    cal = calibrate(probs, targets, multi_label=True)
    assert cal.method == "temperature per label"
    np.testing.assert_allclose(cal.temperature, sharpen, rtol=0.2)
    assert cal.nll_after < cal.nll_before and cal.ece_after < cal.ece_before


def test_bad_input_is_refused_with_the_shape():
    with pytest.raises(ValueError, match="one row per target"):
        calibrate(np.full((4, 2), 0.5), np.array([0, 1]), False)
    with pytest.raises(ValueError, match="class indices in 0..1"):
        calibrate(np.full((4, 2), 0.5), np.array([0, 1, 2, 0]), False)
    with pytest.raises(ValueError, match="at least 4"):
        calibration_split(np.array([0, 1]))


def test_predict_and_the_export_sidecar_use_the_models_temperature(tmp_path):
    from fastai.data.core import DataLoaders
    from fastai.learner import Learner
    from fastai.losses import CrossEntropyLossFlat
    from torch.utils.data import DataLoader, TensorDataset

    from tresnet_nb.model.export import export_torchscript
    from tresnet_nb.model.load import load_model
    from tresnet_nb.train.learner import predict, set_temperature

    torch.manual_seed(0)
    model = load_model("tresnet_m", weights=None, num_classes=3).eval()
    x, y = torch.rand(6, 3, 64, 64), torch.tensor([0, 1, 2, 0, 1, 2])
    dl = DataLoader(TensorDataset(x, y), batch_size=3)
    learn = Learner(DataLoaders(dl, dl), model, loss_func=CrossEntropyLossFlat())
    with torch.no_grad():
        logits = model(x)
    plain, _ = predict(learn)
    torch.testing.assert_close(plain, logits.softmax(1), atol=1e-5, rtol=0)
    set_temperature(model, 2.5)
    scaled, _ = predict(learn)
    torch.testing.assert_close(scaled, (logits / 2.5).softmax(1), atol=1e-5, rtol=0)
    assert not torch.allclose(scaled, plain, atol=1e-4)
    result = export_torchscript(model, tmp_path / "model.pt", 64)
    assert json.loads(result.sidecar.read_text())["temperature"] == 2.5
    with pytest.raises(ValueError, match="finite and positive"):
        set_temperature(model, -1.0)
    with pytest.raises(ValueError, match="2 temperatures for a model with 3 outputs"):
        set_temperature(model, [1.0, 2.0])
