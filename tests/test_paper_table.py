"""The closing "ours vs paper" table says honestly what can be compared."""

from __future__ import annotations

import pytest

from tresnet_nb.steps.results import paper_table


def record(dataset: str, preset: str = "smoke", pretrained: bool = False, value: float = 0.5) -> dict:
    return {
        "dataset": dataset,
        "metric_value": value,
        "metric_name": "accuracy",
        "arch": "tresnet_m",
        "img_size": 64,
        "epochs": 1,
        "preset": preset,
        "pretrained": pretrained,
        "max_items": 64,
    }


@pytest.mark.parametrize(
    ("rec", "verdict"),
    [
        (record("cifar10"), "not comparable: a reduced run"),
        (record("cifar10", "paper", pretrained=False), "not comparable: a reduced run"),
        (record("cifar10", "paper", pretrained=True, value=0.985), "-0.0050 against the paper"),
        (record("herbarium2020"), "leaderboard place"),
        (record("folder"), "no result on this dataset"),
        (record("fashion_mnist"), "no result on this dataset"),
    ],
)
def test_verdict(rec, verdict):
    table = paper_table(rec)
    column = table.columns[1]
    assert verdict in table[column].iloc[2]
    assert ("RANDOM weights" in table[column].iloc[0]) is (not rec["pretrained"])
    assert "at most 64 training items" in table[column].iloc[0]
