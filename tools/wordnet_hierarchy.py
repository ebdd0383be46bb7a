"""Writes tresnet_nb/heads21k/resources/imagenet21k_wordnet_tree.tsv.gz: the WordNet 3.0 synsets the name matcher and the
hierarchical decoder need, each with its hypernym, and the sense ranks that order the senses of a shared word.

The package reads this file when the authors' tree file (imagenet21k_miil_tree.pth) is not at hand, so it never
needs WordNet at run time. Source: WordNet 3.0's ``data.noun`` and ``index.noun`` (Debian package
``wordnet-base``: /usr/share/wordnet; format in wndb(5WN)). ImageNet synset ids are 'n' + the 8-digit noun offset.

The synsets (rows), with all their ancestors up to ``entity``:
1. every synset of the two ImageNet-21K label sets (fall11, 11,221 classes; winter21, 10,450);
2. the other senses of their words that lie under a class of a label set (a 'plate' is also the dish one eats from;
   a 'sword lily' is also a gladiolus), so that a name is never forced into the one sense ImageNet happens to have;
3. the nouns under a class of a label set whose name ends in a word of the rows but which are not a kind of it (a
   thorn apple is a Datura, not an apple; a sea horse is a fish), so that they are found as themselves rather
   than by their head word;
2 and 3 repeated until every word of every row has all its senses that lie under a class.
A row is ``offset<TAB>parent<TAB>lemmas<TAB>gloss<TAB>word=rank ...``: ``lemmas`` and ``gloss`` (the definition,
without the examples, as timm ships them) only for the synsets whose lemmas timm does not ship; ``rank`` is the
synset's place (1 = most frequent) among the senses index.noun lists for ``word``, only for words that two or more
rows share.

Rule (deterministic): a synset's parent is the first hypernym (``@``) its data.noun line lists; a synset with none
takes its first instance hypernym (``@i``). About 3% of these synsets list more than one hypernym (a dog is a
canine and a domestic animal: canine is listed first). Restricted to fall11 this gives depths 0..11, the 11 levels
(0..10) of the authors' semantic softmax plus 6 classes at depth 11.

Usage: python tools/wordnet_hierarchy.py            (rewrites the file)
       python tools/wordnet_hierarchy.py --check    (exit 1 if the shipped file differs from what this writes)
"""

from __future__ import annotations

import argparse
import gzip
import io
import sys
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tresnet_nb.heads21k.labels import LABEL_SETS, has_lemma, label_set  # noqa: E402
from tresnet_nb.heads21k.names import normalise  # noqa: E402
from tresnet_nb.heads21k.wordnet import LICENSE_FILE, TREE_FILE, WORDNET_NOTICE, read_tree_text  # noqa: E402

WORDNET = Path("/usr/share/wordnet")


class Nouns(NamedTuple):
    """WordNet's nouns by offset: parent (by the rule above; None for ``entity``), words ('_' for spaces), gloss."""

    parents: dict[str, str | None]
    words: dict[str, list[str]]
    glosses: dict[str, str]

    def chain(self, offset: str) -> list[str]:
        """``offset`` and its ancestors, leaf first."""
        out = [offset]
        while self.parents[out[-1]] is not None:
            out.append(self.parents[out[-1]])
        return out


def parse_data(data_noun: Path) -> Nouns:
    """The nouns of ``data_noun``."""
    parents: dict[str, str | None] = {}
    words: dict[str, list[str]] = {}
    glosses: dict[str, str] = {}
    with open(data_noun, encoding="latin-1") as f:
        for line in f:
            if line.startswith(" "):  # the licence header: lines start with two spaces
                continue
            head, _, gloss = line.partition(" | ")
            fields = head.split(" ")
            n_words = int(fields[3], 16)
            at = 4 + 2 * n_words  # offset, lex_filenum, ss_type, w_cnt, then (word, lex_id) pairs
            pointers = [fields[at + 1 + 4 * k : at + 5 + 4 * k] for k in range(int(fields[at]))]
            hyper = [p[1] for p in pointers if p[0] == "@" and p[2] == "n"]
            instance = [p[1] for p in pointers if p[0] == "@i" and p[2] == "n"]
            parents[fields[0]] = (hyper or instance or [None])[0]
            words[fields[0]] = [fields[4 + 2 * k] for k in range(n_words)]
            glosses[fields[0]] = gloss.strip().split('; "')[0].strip()  # the definition; examples follow in quotes
    return Nouns(parents, words, glosses)


def parse_index(index_noun: Path) -> dict[str, list[str]]:
    """Word (lower case, '_' for spaces) -> its noun offsets, most frequent sense first, from ``index_noun``."""
    senses = {}
    with open(index_noun, encoding="latin-1") as f:
        for line in f:
            if line.startswith(" "):
                continue
            fields = line.split()
            # lemma, pos, synset_cnt, p_cnt, p_cnt pointer symbols, sense_cnt, tagsense_cnt, synset_cnt offsets
            senses[fields[0]] = fields[6 + int(fields[3]) :][: int(fields[2])]
    return senses


def _closure(nouns: Nouns, offsets: set[str]) -> set[str]:
    return {a for o in offsets for a in nouns.chain(o)}


def _not_kinds_of_their_head(keys: dict[str, list[str]], chains: dict[str, set[str]], known: set[str]) -> set[str]:
    """The nouns of ``chains`` (noun -> itself and its ancestors) outside ``known`` with a name (``keys``: noun ->
    its normalised words) whose longest head word, as names.candidates would find it among ``known``, names none of
    their ancestors."""
    heads: dict[str, set[str]] = {}
    for o in known:
        for key in keys[o]:
            heads.setdefault(key, set()).add(o)
            heads.setdefault(key.replace(" ", ""), set()).add(o)
    out = set()
    for o in chains.keys() - known:
        for tokens in (key.split() for key in keys[o]):
            tails = (" ".join(tokens[k:]) for k in range(1, len(tokens)))
            tail = next((t for t in tails if t in heads or t.replace(" ", "") in heads), None)
            if tail is not None and heads.get(tail, set()).union(heads.get(tail.replace(" ", ""), ())).isdisjoint(
                chains[o]
            ):
                out.add(o)
    return out


def tree_rows(nouns: Nouns, index: dict[str, list[str]]) -> list[tuple[str, str]]:
    """(offset, parent offset or '') of the synsets 1-3 above and of their ancestors, sorted."""
    classes: set[str] = set()
    for name, spec in LABEL_SETS.items():
        if spec.hierarchy:
            for synset in label_set(name).synsets:
                if synset[1:] not in nouns.parents:
                    raise KeyError(f"{synset} ({name}) is not a noun of this data.noun; is it WordNet 3.0?")
                classes.add(synset[1:])
    chains = {o: set(nouns.chain(o)) for o in nouns.parents}
    under = {o: chain for o, chain in chains.items() if not classes.isdisjoint(chain)}  # the nouns under a class
    keys = {o: [normalise(w.replace("_", " ")) for w in words] for o, words in nouns.words.items()}
    keep: set[str] = set()
    new = _closure(nouns, classes)
    while new - keep:  # until every word of a row has all its senses under a class (a few rounds)
        keep |= new
        others = {o for a in keep for w in nouns.words[a] for o in index.get(w.lower(), ())} - keep
        new = keep | _closure(nouns, {o for o in others if o in under})
        new |= _closure(nouns, _not_kinds_of_their_head(keys, under, new))
    return sorted((o, nouns.parents[o] or "") for o in keep)


def sense_ranks(rows: list[tuple[str, str]], nouns: Nouns, index: dict[str, list[str]]) -> dict[str, str]:
    """Offset -> 'word=rank ...' for the words (lower case, as index.noun has them) that two or more rows share."""
    lower = {o: [w.lower() for w in nouns.words[o]] for o, _ in rows}
    sharing: dict[str, int] = {}
    for offset, _ in rows:
        for word in lower[offset]:
            sharing[word] = sharing.get(word, 0) + 1
    ranks = {
        o: {w: index[w].index(o) + 1 for w in words if sharing[w] > 1 and o in index.get(w, ())}
        for o, words in lower.items()
    }
    return {o: " ".join(f"{w}={r}" for w, r in ranks[o].items()) for o, _ in rows}


def render(rows: list[tuple[str, str]], nouns: Nouns, senses: dict[str, str]) -> bytes:
    """The gzipped TSV (header comments, then the rows), byte-identical for identical rows."""
    lines = []
    for o, p in rows:
        known = has_lemma(f"n{o}")  # timm ships the lemmas and definitions of the ImageNet synsets
        lemmas = "" if known else ", ".join(w.replace("_", " ") for w in nouns.words[o])
        lines.append(f"{o}\t{p}\t{lemmas}\t{'' if known else nouns.glosses[o]}\t{senses[o]}".rstrip("\t"))
    text = "".join(f"# {line}\n" for line in WORDNET_NOTICE.splitlines()) + "".join(f"{line}\n" for line in lines)
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0, compresslevel=9) as f:
        f.write(text.encode())
    return buffer.getvalue()


def build(wordnet: Path) -> bytes:
    """The data file written from the WordNet 3.0 files in ``wordnet``."""
    nouns, index = parse_data(wordnet / "data.noun"), parse_index(wordnet / "index.noun")
    rows = tree_rows(nouns, index)
    return render(rows, nouns, sense_ranks(rows, nouns, index))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wordnet", type=Path, default=WORDNET, help="folder of WordNet 3.0 data.noun, index.noun")
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    if not (args.wordnet / "data.noun").is_file():
        print(
            f"{args.wordnet}/data.noun not found: apt-get install wordnet-base (or pass --wordnet DIR)", file=sys.stderr
        )
        return 2
    data = build(args.wordnet)
    if args.check:
        fresh = gzip.decompress(data).decode()
        licence = LICENSE_FILE.read_text() if LICENSE_FILE.is_file() else ""
        if not TREE_FILE.is_file() or read_tree_text() != fresh or licence != WORDNET_NOTICE + "\n":
            print(f"{TREE_FILE} or {LICENSE_FILE.name} is out of date with tools/wordnet_hierarchy.py; run it")
            return 1
        return 0
    TREE_FILE.write_bytes(data)
    LICENSE_FILE.write_text(WORDNET_NOTICE + "\n")
    print(f"wrote {TREE_FILE} ({len(data):,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
