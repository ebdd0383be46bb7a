"""Matching a dataset's class names to the classes of an ImageNet-21K head, sense by sense.

The senses of each name come from :mod:`.names`. Many names have several (a mouse is a rodent or a computer device;
a tank is a storage tank, an army tank or a tank car). The sense kept is decided by these criteria in turn, each
keeping the senses that score best on it:
1. it descends from a synset its superclass means (:mod:`.kinds`: CIFAR-100's 'household_electrical_devices' ->
   device or electronic equipment) or that the dataset's ``context`` words mean; with a superclass in that checked
   table, a class none of whose senses fits gets a random row;
2. it is not a kind of another class's choice: a dataset's classes exclude each other (CIFAR-100's castle is no
   palace, a kind of house). The criteria run twice, the second time against the first choices of the classes
   found by name (a head word names a kind that other classes may well belong to);
3. it lies where the dataset's other classes live: the mean depth of the deepest ancestor it shares with each of
   them (with the superclass's other classes where there are superclasses), within half a level of the best;
4. it is WordNet's most frequent sense of the word (index.noun's order). With a checked superclass this comes
   before 3: the superclass already says where the class lives, and the few classes beside it are a poor guide
   (a bus among motorcycles and pickups would be the jalopy);
5. it is a class of the label set; then the closest mean depth; then the lowest synset id.
A sense outside the label set takes the row of its nearest ancestor in it. Every choice is reported with its synset,
definition, reason and the senses set aside, and ``overrides`` ({name: synset, or None for a random row}) replaces
any of them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import pandas as pd

from .kinds import KINDS, kind_synsets
from .labels import LabelSet, definition, lemma
from .names import Candidates, candidates, domain, normalise
from .wordnet import ancestors, parents, sense_ranks

STATUSES = ("matched", "ancestor", "random")  # coverage columns: matched, via ancestor, random
# Senses whose mean shared depth with the other classes is within this many levels of the best count as tied
# (a bird and a shuttlecock differ by more than one level among CIFAR-10's classes; a truck and a hand truck by 0.2).
AFFINITY_TOLERANCE = 0.5
UNRANKED = 99


def _shared_depth(a: str, b: str) -> int:
    """Depth (edges below entity) of the deepest common ancestor of ``a`` and ``b``, less one when it is one of
    them: a dataset's classes exclude each other, so a sense under (or over) another class earns no extra credit."""
    ra, rb = ancestors(a)[::-1], ancestors(b)[::-1]
    depth = 0
    while depth < min(len(ra), len(rb)) and ra[depth] == rb[depth]:
        depth += 1
    return depth - 1 - (depth in (len(ra), len(rb)))


@dataclass(frozen=True)
class ClassMatch:
    """How one class of the dataset gets its row: the sense chosen, the 21K row copied, and why."""

    name: str
    status: str  # 'matched', 'ancestor' (a more general class's row) or 'random'
    synset: str | None  # the sense chosen for the name (may lie outside the label set)
    row: int | None  # output index of the 21K head whose weights and bias are copied
    row_synset: str | None
    how: str  # 'lemma', 'spelling', 'qualifier', 'head word', 'override' or ''
    reason: str
    others: tuple[str, ...] = ()  # the senses set aside


@dataclass(frozen=True)
class HeadMatch:
    """The classes of a dataset matched to a 21K label set."""

    label_set: str
    matches: tuple[ClassMatch, ...]

    def coverage(self) -> dict[str, int]:
        """Classes, then how many are matched, via an ancestor's row, and random."""
        counts = {s: sum(m.status == s for m in self.matches) for s in STATUSES}
        return {
            "classes": len(self.matches),
            "matched": counts["matched"],
            "via ancestor": counts["ancestor"],
            "random": counts["random"],
        }

    def table(self) -> pd.DataFrame:
        """Every choice: the class, its status, the sense (synset, lemmas, definition), the row and the reason."""
        first = lambda s: lemma(s).split(", ")[0]  # noqa: E731
        return pd.DataFrame(
            [
                {
                    "class": m.name,
                    "status": m.status,
                    "synset": m.synset or "",
                    "lemmas": lemma(m.synset) if m.synset else "",
                    "definition": definition(m.synset) if m.synset else "",
                    "head row": "" if m.row_synset is None else f"{m.row} {m.row_synset} ({first(m.row_synset)})",
                    "how": m.how,
                    "why": m.reason,
                    "other senses": ", ".join(f"{s} ({first(s)})" for s in m.others),
                }
                for m in self.matches
            ]
        )


def _affinity(sense: str, peers: Sequence[tuple[str, ...]]) -> float:
    """Mean over ``peers`` (each a class's senses) of the depth of the deepest ancestor ``sense`` shares with it."""
    return sum(max(_shared_depth(sense, p) for p in peer) for peer in peers) / max(len(peers), 1)


def _rank(synset: str, form: str) -> int:
    """WordNet's sense number of ``synset`` for the word ``form`` (1: its most frequent sense)."""
    ranks = {normalise(w.replace("_", " ")): r for w, r in sense_ranks(synset).items()}
    return ranks.get(form, UNRANKED)


def _fits(synset: str, kind_set: frozenset[str]) -> bool:
    """Whether ``synset`` descends from (or is) one of ``kind_set``."""
    return not kind_set.isdisjoint(ancestors(synset))


@dataclass(frozen=True)
class _Setting:
    """What a class's sense is judged against: the senses of its peers, the synsets its superclass (or the context)
    means and whether they come from the checked table, and the other classes' first choices."""

    peers: tuple[tuple[str, ...], ...]
    kinds: frozenset[str]
    kind_text: str
    checked: bool  # the kinds come from KINDS: a sense must fit them, and frequency outranks closeness
    taken: Mapping[str, str] = field(default_factory=dict)  # another class's first choice -> that class


def _choose(found: Candidates, setting: _Setting, labels: LabelSet) -> tuple[str, str] | None:
    """The sense among ``found`` that fits the dataset best and the criteria that decided; None when the superclass
    is in the checked table and no sense fits it."""
    senses = found.synsets
    if setting.checked and not any(_fits(s, setting.kinds) for s in senses):
        return None
    if len(senses) == 1:
        return senses[0], "only sense"
    affinity = {s: _affinity(s, setting.peers) for s in senses}
    over = {s: {setting.taken[a] for a in ancestors(s)[1:] if a in setting.taken} for s in senses}
    others = ", ".join(map(repr, sorted(set().union(*over.values()))))
    near = ("nearest the dataset's other classes", lambda s: affinity[s], AFFINITY_TOLERANCE)
    frequent = (f"WordNet's most frequent sense of {found.form!r}", lambda s: -float(_rank(s, found.form)), 0.0)
    criteria = (  # (reason, score, tolerance): a criterion keeps the senses within tolerance of the best score
        (f"fits the superclass {setting.kind_text}", lambda s: float(_fits(s, setting.kinds)), 0.0),
        (f"not a kind of another class ({others})", lambda s: -float(bool(over[s])), 0.0),
        *((frequent, near) if setting.checked else (near, frequent)),
        (f"in {labels.name}", lambda s: float(s in labels.index), 0.0),
        ("nearest the dataset's other classes", lambda s: affinity[s], 0.0),
    )
    pool, reasons = list(senses), []
    for reason, score, tolerance in criteria:
        best = max(score(s) for s in pool)
        kept = [s for s in pool if score(s) >= best - tolerance]
        if len(kept) < len(pool) and reason not in reasons:
            reasons.append(reason)
        pool = kept
        if len(pool) == 1:
            break
    if len(pool) > 1:
        reasons.append("lowest synset id of the ties")
    best = min(pool)
    return best, "; ".join(reasons) + f" (mean shared depth {affinity[best]:.2f})"


def _row(synset: str, labels: LabelSet) -> tuple[int | None, str | None]:
    """The output index and synset of ``synset`` or of its nearest ancestor in ``labels``."""
    for a in ancestors(synset):
        if a in labels.index:
            return labels.index[a], a
    return None, None


def _override(name: str, synset: str | None, labels: LabelSet) -> ClassMatch:
    if synset is None:
        return ClassMatch(name, "random", None, None, None, "override", "set to random by the user")
    if not re.fullmatch(r"n\d{8}", synset) or (synset not in parents() and synset not in labels.index):
        raise ValueError(
            f"Override {name!r}: {synset!r} is not a synset of the {labels.name} label set or of its WordNet tree; "
            f"give an id like 'n02330245' (see the 'synset' and 'other senses' columns of match.table()), or None"
        )
    row, row_synset = _row(synset, labels)
    status = "matched" if row_synset == synset else "ancestor" if row is not None else "random"
    return ClassMatch(name, status, synset, row, row_synset, "override", "set by the user")


def match_classes(
    class_names: Sequence[str],
    labels: LabelSet,
    superclasses: Mapping[str, str] | None = None,
    context: Sequence[str] = (),
    overrides: Mapping[str, str | None] | None = None,
) -> HeadMatch:
    """Match ``class_names`` to ``labels`` (fall11 or winter21): ``superclasses`` maps a class to its superclass
    name, ``context`` names kinds every class is likely to be (e.g. 'flower'), ``overrides`` maps a class name
    to the synset to use (or None: a random row)."""
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(class_names))
    if unknown:
        raise ValueError(f"Overrides for {unknown}, which are not class names; the classes are {list(class_names)}")
    fixed = {n: _override(n, synset, labels) for n, synset in overrides.items()}
    found = {n: candidates(n) for n in class_names if n not in fixed}
    branch = domain(found.values())
    found = {n: c.within(branch) for n, c in found.items()}
    settings = {n: _setting(n, superclasses, context) for n in found}
    # each class is compared with the senses of the others that fit their superclass (all when none does): the
    # branch where they may live; overrides included
    senses = {
        n: tuple(s for s in c.synsets if _fits(s, settings[n].kinds)) or c.synsets
        for n, c in found.items()
        if c.synsets
    }
    senses.update({n: (m.synset,) for n, m in fixed.items() if m.synset})
    for name in settings:  # with superclasses, the peers are the other classes of the same superclass
        peers = tuple(
            senses[o]
            for o in senses
            if o != name and (not superclasses or superclasses.get(o) == superclasses.get(name))
        )
        settings[name] = replace(settings[name], peers=peers)
    first = {n: _choose(c, settings[n], labels) for n, c in found.items() if c.synsets}
    # then again, setting aside the senses that are kinds of another class's first choice (found by name, not by a
    # head word, which names a kind the others may belong to): a castle that would be a palace, a kind of house
    chosen = {n: p[0] for n, p in first.items() if p and found[n].how != "head word"}
    chosen.update({n: m.synset for n, m in fixed.items() if m.synset})
    picks = {
        n: _choose(found[n], replace(settings[n], taken={s: o for o, s in chosen.items() if o != n}), labels)
        for n in first
    }
    return HeadMatch(
        labels.name, tuple(fixed[n] if n in fixed else _result(n, found[n], picks.get(n), labels) for n in class_names)
    )


def _setting(name: str, superclasses: Mapping[str, str] | None, context: Sequence[str]) -> _Setting:
    """The superclass (and context) of ``name`` and the synsets they mean (peers and choices are filled in later)."""
    words = (*([superclasses[name]] if superclasses and name in superclasses else []), *context)
    checked = bool(words) and all(w in KINDS for w in words)
    return _Setting((), kind_synsets(words), " or ".join(map(repr, words)), checked)


def _result(name: str, cand: Candidates, pick: tuple[str, str] | None, labels: LabelSet) -> ClassMatch:
    """The :class:`ClassMatch` of ``name`` given its candidates and the chosen (sense, reason)."""
    if pick is None and cand.synsets:
        return ClassMatch(name, "random", None, None, None, cand.how, "no sense fits its superclass", cand.synsets)
    if pick is None:
        return ClassMatch(
            name, "random", None, None, None, "", "no lemma, spelling or head word (in the dataset's branch) found"
        )
    sense, reason = pick
    row, row_synset = _row(sense, labels)
    if row is None:
        status, reason = "random", f"{reason}; no ancestor in {labels.name}"
    elif row_synset == sense and cand.how != "head word":
        status = "matched"
    else:
        status = "ancestor"
        more = [f"head word {cand.form!r}"] if cand.how == "head word" else []
        more += [f"nearest ancestor in {labels.name}"] if row_synset != sense else []
        reason = "; ".join([reason, *more])
    others = tuple(s for s in cand.synsets if s != sense)
    return ClassMatch(name, status, sense, row, row_synset, cand.how, reason, others)


def parse_overrides(text: str | Mapping[str, str | None] | None) -> dict[str, str | None]:
    """Overrides from a notebook parameter: 'mouse=n02330245, tank=none' (none: a random row), or a dict as is."""
    if text is None or isinstance(text, Mapping):
        return dict(text or {})
    out: dict[str, str | None] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, synset = (x.strip() for x in item.rpartition("="))
        if not sep or not name:
            raise ValueError(f"Override {item!r} is not NAME=SYNSET; write e.g. 'mouse=n02330245, tank=none'")
        out[name] = None if synset.lower() in ("none", "random", "") else synset
    return out
