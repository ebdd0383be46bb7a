"""Which training labels are wrong? Confident learning (cleanlab's ``find_label_issues``) on out-of-sample
probabilities from a K-fold cross-fit: the run's training items split into K stratified folds, a fresh model of the
same architecture, weights, recipe and options trained on K-1 of them and predicting the one left out, so every item
is scored by a model that never saw its label. The cost is K trainings on (K-1)/K of the items: about K-1 times the
run's own training. Each fold checkpoints like a run and keeps its predictions (``crossfit/fold<i>/``), so a crash
loses at most one fold's unfinished epoch."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..data.base import stratified_holdout
from ..model.load import load_model
from ..steps.data import Data
from ..train.fit import fit
from ..train.learner import build_learner, predict
from . import need
from .items import Items, fold_dls

HELD_OUT = "heldout.npz"


def fold_indices(labels: np.ndarray, folds: int, seed: int) -> list[np.ndarray]:
    """``folds`` disjoint, stratified index sets covering every item (multi-label: stratified as
    :func:`~tresnet_nb.data.base.stratified_holdout` does)."""
    n = len(labels)
    if folds < 2 or folds > n:
        raise ValueError(f"FOLDS must be between 2 and the number of training items ({n}); got {folds}")
    left, out = np.arange(n), []
    for k in range(folds, 1, -1):  # hold out 1/k of what is left, k = folds..2: equal folds, each stratified
        keep, held = stratified_holdout(labels[left], 1.0 / k, seed + k)
        out.append(np.sort(left[held]))
        left = left[keep]
    out.append(np.sort(left))
    return out


def crossfit_probs(
    data: Data,
    folds: int = 4,
    out: Path | None = None,
    log: Callable[[str], None] = print,
) -> np.ndarray:
    """Out-of-sample probabilities of the run's training items (in loader order) from a ``folds``-fold cross-fit
    of the run's recipe and training options (one size: without its progressive phases); each fold's checkpoints and
    predictions under ``out`` (default OUTPUT_DIR/crossfit)."""
    cfg = data.cfg.with_changes(progressive=None)
    out = Path(out or cfg.out / "crossfit")
    labels = data.dls.train.dataset.labels.numpy()
    parts = fold_indices(labels, folds, cfg.seed)
    n_out = len(data.class_names)
    probs = np.full((len(labels), n_out), np.nan, dtype=np.float32)
    for i, held in enumerate(parts):
        where = out / f"fold{i}"
        saved = where / HELD_OUT
        if saved.is_file():
            with np.load(saved) as f:
                if not np.array_equal(f["index"], held):
                    raise ValueError(f"{str(saved)!r} holds another fold; delete {str(out)!r} to cross-fit again")
                probs[held] = f["probs"]
            log(f"fold {i + 1}/{folds}: reused {saved}")
            continue
        keep = np.sort(np.concatenate([p for j, p in enumerate(parts) if j != i]))
        log(f"fold {i + 1}/{folds}: training on {len(keep)} items, predicting the {len(held)} left out")
        model = load_model(cfg.arch, cfg.weights, num_classes=n_out)
        learn = build_learner(cfg, fold_dls(data, keep, held), model, task=data.task)
        with learn.no_logging():
            fit(learn, cfg, checkpoint_dir=where)
        fold_probs, _ = predict(learn)
        where.mkdir(parents=True, exist_ok=True)
        np.savez(saved, index=held, probs=fold_probs.numpy())
        probs[held] = fold_probs.numpy()
    return probs


@dataclass
class LabelIssues:
    """The flagged items, most suspect first, and the estimated share of wrong labels per class."""

    table: pd.DataFrame  # path, split, given, suggested, score (lower = more suspect)
    noise_rate: pd.Series  # per class name
    method: str
    probs: np.ndarray  # the out-of-sample probabilities of every training item
    scores: np.ndarray  # cleanlab's label quality score of every training item (lower = more suspect)


def find_label_issues(items: Items, probs: np.ndarray, class_names: tuple[str, ...], multi_label: bool) -> LabelIssues:
    """cleanlab's confident learning on out-of-sample ``probs`` of ``items``: every flagged item, most suspect
    first (lowest self-confidence), with its given and suggested labels, and the noise rate per class (single-label:
    1 - the confident joint's diagonal share of each given class; multi-label: cleanlab's per-class issue
    probability)."""
    need("cleanlab", "Finding label errors")
    import cleanlab.count
    import cleanlab.filter
    import cleanlab.rank

    if len(probs) != len(items) or np.isnan(probs).any():
        raise ValueError(f"need finite out-of-sample probabilities for all {len(items)} items; got {probs.shape}")
    names = np.asarray(class_names, dtype=object)
    if multi_label:
        from cleanlab.multilabel_classification import get_label_quality_scores
        from cleanlab.multilabel_classification.dataset import common_multilabel_issues
        from cleanlab.multilabel_classification.filter import find_label_issues as find_multilabel

        given = [np.flatnonzero(row).tolist() for row in items.labels]
        flagged = find_multilabel(given, probs, n_jobs=1, return_indices_ranked_by="self_confidence")
        score = get_label_quality_scores(given, probs)
        given_text = [";".join(names[g]) for g in given]
        suggested = [";".join(names[np.flatnonzero(p >= 0.5)]) for p in probs]
        per_class = common_multilabel_issues(given, probs, class_names=list(class_names))
        noise = per_class.groupby("Class Name")["Issue Probability"].sum().reindex(list(class_names)).fillna(0.0)
    else:
        given = items.labels.astype(np.int64)
        flagged = cleanlab.filter.find_label_issues(given, probs, n_jobs=1, return_indices_ranked_by="self_confidence")
        score = cleanlab.rank.get_label_quality_scores(given, probs, method="self_confidence")
        given_text = list(names[given])
        suggested = list(names[probs.argmax(1)])
        joint = cleanlab.count.estimate_joint(given, probs)
        rows = joint.sum(1)
        noise = pd.Series(
            np.where(rows > 0, 1 - np.diag(joint) / np.maximum(rows, 1e-12), 0.0), index=list(class_names)
        )
    flagged = np.asarray(flagged, dtype=np.int64)
    table = pd.DataFrame(
        {
            "path": [items.refs[i] for i in flagged],
            "split": items.split,
            "given": [given_text[i] for i in flagged],
            "suggested": [suggested[i] for i in flagged],
            "score": np.asarray(score)[flagged].astype(float),
            "item": flagged,
        }
    )
    table = table.sort_values("score", kind="stable").reset_index(drop=True)
    noise.name = "noise_rate"
    method = "cleanlab find_label_issues (prune_by_noise_rate), self-confidence ranking"
    return LabelIssues(table, noise, method, probs, np.asarray(score, dtype=np.float64))
