"""The WordNet 3.0 synsets shipped with the package (written by tools/wordnet_hierarchy.py).

``resources/imagenet21k_wordnet_tree.tsv.gz`` holds the synsets of the fall11 and winter21 label sets, the other senses
of their words that lie under a class (the dinner plate beside the collection plate), the nouns whose name ends in
one of these words without being a kind of it (thorn apple, a Datura) and the ancestors of all of them (20k rows).
For each: its parent, the first hypernym its WordNet entry lists; for those whose lemmas timm does not ship, the
lemmas and the definition (gloss); and, for words that several of these synsets share, the synset's sense rank for
the word ('couch=1': the most frequent sense of 'couch' in WordNet's index.noun). Row: offset, parent, lemmas,
gloss, ranks, separated by tabs (trailing empty fields left out).
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / "resources"  # package data (pyproject: package-data)
TREE_FILE = DATA_DIR / "imagenet21k_wordnet_tree.tsv.gz"
LICENSE_FILE = DATA_DIR / "WORDNET_LICENSE.txt"
ROOT_SYNSET = "n00001740"  # entity
# The licence asks that its notice travel with every copy, modified or not: it heads the data file and sits beside
# it as WORDNET_LICENSE.txt (the text of /usr/share/doc/wordnet-base/copyright).
WORDNET_NOTICE = """\
Derived from WordNet 3.0 (data.noun, index.noun): hypernyms, lemmas, glosses and sense ranks of nouns.
WordNet Release 3.0. This software and database is being provided to you, the LICENSEE, by Princeton University
under the following license. By obtaining, using and/or copying this software and database, you agree that you have
read, understood, and will comply with these terms and conditions.:
Permission to use, copy, modify and distribute this software and database and its documentation for any purpose
and without fee or royalty is hereby granted, provided that you agree to comply with the following copyright notice
and statements, including the disclaimer, and that the same appear on ALL copies of the software, database and
documentation, including modifications that you make for internal use or for distribution.
WordNet 3.0 Copyright 2006 by Princeton University. All rights reserved.
THIS SOFTWARE AND DATABASE IS PROVIDED "AS IS" AND PRINCETON UNIVERSITY MAKES NO REPRESENTATIONS OR WARRANTIES,
EXPRESS OR IMPLIED. BY WAY OF EXAMPLE, BUT NOT LIMITATION, PRINCETON UNIVERSITY MAKES NO REPRESENTATIONS OR
WARRANTIES OF MERCHANT- ABILITY OR FITNESS FOR ANY PARTICULAR PURPOSE OR THAT THE USE OF THE LICENSED SOFTWARE,
DATABASE OR DOCUMENTATION WILL NOT INFRINGE ANY THIRD PARTY PATENTS, COPYRIGHTS, TRADEMARKS OR OTHER RIGHTS.
The name of Princeton University or Princeton may not be used in advertising or publicity pertaining to
distribution of the software and/or database. Title to copyright in this software, database and any associated
documentation shall at all times remain with Princeton University and LICENSEE agrees to preserve same."""


def read_tree_text() -> str:
    """The shipped tree file's text."""
    if not TREE_FILE.is_file():
        raise FileNotFoundError(
            f"{TREE_FILE} is missing from this installation; reinstall tresnet-nb, or regenerate it with "
            f"`python tools/wordnet_hierarchy.py` (needs WordNet 3.0: apt-get install wordnet-base)"
        )
    return gzip.decompress(TREE_FILE.read_bytes()).decode()


@dataclass(frozen=True)
class _Tree:
    parents: dict[str, str | None]
    lemmas: dict[str, str]
    glosses: dict[str, str]
    ranks: dict[str, dict[str, int]]


@lru_cache(maxsize=1)
def _read() -> _Tree:
    tree = _Tree({}, {}, {}, {})
    for line in read_tree_text().splitlines():
        if line and not line.startswith("#"):
            offset, parent, words, gloss, senses = (line.split("\t") + [""] * 3)[:5]
            synset = f"n{offset}"
            tree.parents[synset] = f"n{parent}" if parent else None
            if words:
                tree.lemmas[synset], tree.glosses[synset] = words, gloss
            if senses:
                tree.ranks[synset] = {w: int(r) for w, _, r in (p.rpartition("=") for p in senses.split(" "))}
    return tree


def parents() -> dict[str, str | None]:
    """Synset -> parent synset (None for entity), over every synset of the file."""
    return _read().parents


def extra_lemmas(synset: str) -> str | None:
    """The WordNet lemmas ('iris, flag, fleur-de-lis, sword lily') of a synset whose lemmas timm lacks."""
    return _read().lemmas.get(synset)


def gloss(synset: str) -> str | None:
    """The WordNet definition of a synset whose lemmas timm lacks ('the flesh of a bird or fowl used as food')."""
    return _read().glosses.get(synset)


def sense_ranks(synset: str) -> dict[str, int]:
    """WordNet word (lower case, '_' for spaces) -> the sense rank of ``synset`` for it, for shared words."""
    return _read().ranks.get(synset, {})


@cache
def ancestors(synset: str) -> tuple[str, ...]:
    """``synset`` and its ancestors, leaf first, up to entity; ``(synset,)`` when the tree does not know it."""
    up = parents()
    chain = [synset]
    while up.get(chain[-1]) is not None:
        chain.append(up[chain[-1]])
    return tuple(chain)
