"""Finding the WordNet senses a class name may have, among the synsets of the shipped tree (the 21K classes and
their ancestors).

A name is normalised (case, accents, separators, plurals: 'maple_tree', 'Ankle boot', 'T-shirt/top' -> 't shirt',
'top'), then looked up by the first of: a lemma; a lemma one edit away ('barbeton daisy' -> 'Barberton daisy'); a
dropped last word that names the sense's kind ('maple tree' -> the maple that is a tree); ever shorter head words
('giant white arum lily' -> 'arum lily', 'lily'), which name a more general class and must lie in the dataset's
branch (:func:`domain`). A head word is tried only for names WordNet does not list: the shipped tree holds every
WordNet noun under a 21K class whose name ends in a word of the tree without being a kind of it, so 'thorn apple'
is found as itself (a Datura; its row that of 'plant') and never becomes an apple tree.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from .labels import lemma
from .wordnet import ancestors, parents

# plurals that rules cannot make singular
IRREGULAR = {
    "people": "person",
    "men": "man",
    "women": "woman",
    "children": "child",
    "mice": "mouse",
    "geese": "goose",
    "feet": "foot",
    "teeth": "tooth",
    "oxen": "ox",
    "leaves": "leaf",
    "knives": "knife",
    "wolves": "wolf",
    "fungi": "fungus",
    "cacti": "cactus",
    "dice": "die",
}
MIN_SPELLING = 7  # names this long or longer may match a lemma one edit away


def normalise(text: str) -> str:
    """Lower case, no accents, apostrophes or question marks, separators (_-./,) as single spaces."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    text = re.sub(r"['’?!()]", "", text.replace("&", " and "))
    return " ".join(re.sub(r"[_\-./,:;]+", " ", text).split())


def singular(word: str) -> str:
    """A plural English noun made singular by rule ('flowers' -> 'flower', 'buses' -> 'bus', 'people' -> 'person')."""
    if word in IRREGULAR:
        return IRREGULAR[word]
    for ending, replacement in (
        ("ies", "y"),
        ("sses", "ss"),
        ("shes", "sh"),
        ("ches", "ch"),
        ("xes", "x"),
        ("uses", "us"),
        ("oes", "o"),
    ):
        if word.endswith(ending) and len(word) > len(ending) + 1:
            return word[: -len(ending)] + replacement
    if word.endswith("s") and not word.endswith(("ss", "us", "is")) and len(word) > 3:
        return word[:-1]
    return word


def variants(name: str) -> list[str]:
    """The normalised forms of ``name`` to look up: each '/'-separated alternative as written and singular, with
    trailing numbers dropped ('vehicles_1' -> 'vehicles', 'vehicle')."""
    out: list[str] = []
    for part in name.split("/"):
        words = normalise(part).split()
        while words and words[-1].isdigit():
            words.pop()
        if not words:
            continue
        for form in (" ".join(words), " ".join([*words[:-1], singular(words[-1])])):
            if form not in out:
                out.append(form)
    return out


@lru_cache(maxsize=1)
def lemma_index() -> tuple[dict[str, tuple[str, ...]], dict[str, tuple[str, ...]], dict[str, tuple[str, ...]]]:
    """Over every synset of the shipped tree: normalised lemma -> synsets, the same without spaces, and a lemma's
    last words -> synsets ('fruit' -> edible fruit, ...)."""
    exact: dict[str, list[str]] = {}
    squashed: dict[str, list[str]] = {}
    endings: dict[str, list[str]] = {}
    for synset in sorted(parents()):
        if lemma(synset) == synset:  # no lemma known
            continue
        for word in lemma(synset).split(", "):
            key = normalise(word)
            tokens = key.split()
            keys = [(exact, key), (squashed, key.replace(" ", ""))]
            keys += [(endings, " ".join(tokens[i:])) for i in range(1, len(tokens))]
            for index, k in keys:
                if synset not in index.setdefault(k, []):
                    index[k].append(synset)
    return tuple({k: tuple(v) for k, v in d.items()} for d in (exact, squashed, endings))  # type: ignore[return-value]


def _one_edit(a: str, b: str) -> bool:
    """Whether ``a`` and ``b`` differ by one inserted, deleted or replaced letter, or two swapped neighbours."""
    if abs(len(a) - len(b)) > 1 or a == b:
        return False
    i = next((k for k, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    if len(a) == len(b):
        return a[i + 1 :] == b[i + 1 :] or (a[i + 2 :] == b[i + 2 :] and a[i : i + 2] == b[i : i + 2][::-1])
    longer, shorter = (a, b) if len(a) > len(b) else (b, a)
    return longer[i + 1 :] == shorter[i:]


def lookup(form: str) -> tuple[str, ...]:
    """Synsets with a lemma equal to ``form`` (normalised), with or without its spaces."""
    exact, squashed, _ = lemma_index()
    found = exact.get(form, ()) or squashed.get(form.replace(" ", ""), ())
    return tuple(dict.fromkeys(found))


@dataclass(frozen=True)
class Candidates:
    """The senses a name may have and how they were found ('lemma', 'spelling', 'qualifier' or 'head word')."""

    synsets: tuple[str, ...] = ()
    how: str = ""
    form: str = ""
    shorter: tuple[tuple[str, tuple[str, ...]], ...] = ()  # head words: the shorter ones and their senses, in order

    def within(self, domain: str | None) -> Candidates:
        """Head-word candidates restricted to the senses under ``domain``, trying ever shorter head words."""
        if self.how != "head word" or domain is None:
            return self
        for form, synsets in ((self.form, self.synsets), *self.shorter):
            kept = tuple(s for s in synsets if domain in ancestors(s))
            if kept:
                return Candidates(kept, self.how, form)
        return Candidates()


def candidates(name: str) -> Candidates:
    """The senses of ``name``, by the first of: lemma, spelling, qualifier, head word (see the module's text)."""
    forms = variants(name)
    for form in forms:
        if found := lookup(form):
            return Candidates(found, "lemma", form)
    exact = lemma_index()[0]
    for form in forms:
        if len(form) >= MIN_SPELLING:
            close = sorted(
                {s for key, syn in exact.items() if key[:1] == form[:1] and _one_edit(form, key) for s in syn}
            )
            if close:
                return Candidates(tuple(close), "spelling", form)
    for form in forms:
        words = form.split()
        if len(words) > 1:  # 'maple tree': the maple that is a tree
            kinds = set(lookup(words[-1]))
            kept = tuple(s for s in lookup(" ".join(words[:-1])) if kinds & set(ancestors(s)[1:]))
            if kept:
                return Candidates(kept, "qualifier", " ".join(words[:-1]))
    for form in forms:
        words = form.split()
        heads = [(" ".join(words[k:]), lookup(" ".join(words[k:]))) for k in range(1, len(words))]
        heads = [(head, found) for head, found in heads if found]
        if heads:
            return Candidates(heads[0][1], "head word", heads[0][0], tuple(heads[1:]))
    return Candidates()


def domain(found: Iterable[Candidates]) -> str | None:
    """The deepest synset over three quarters (and at least two) of the classes found by name, not by head word: the
    branch where the dataset lives, which a head word's senses must lie in (a 'bolero deep blue' flower is no blue
    butterfly)."""
    direct = [set().union(*(ancestors(s) for s in c.synsets)) for c in found if c.synsets and c.how != "head word"]
    need = max(2, -(-3 * len(direct) // 4))
    counts: dict[str, int] = {}
    for covered in direct:
        for a in covered:
            counts[a] = counts.get(a, 0) + 1
    common = [a for a, n in counts.items() if n >= need]
    return max(common, key=lambda a: (len(ancestors(a)), a)) if common else None


@lru_cache(maxsize=256)
def kinds(words: tuple[str, ...]) -> frozenset[str]:
    """Every sense of every form and head word of ``words`` (superclass names outside :data:`.kinds.KINDS`), and
    every synset with a lemma ending in one ('fruit' -> edible fruit): broad on purpose, as it only ranks senses."""
    endings = lemma_index()[2]
    out: set[str] = set()
    for word in words:
        for part in re.split(r"\band\b", normalise(word)):
            for form in variants(part):
                tokens = form.split()
                for start in range(len(tokens)):
                    tail = " ".join(tokens[start:])
                    out.update(lookup(tail), endings.get(tail, ()))
    return frozenset(out)
