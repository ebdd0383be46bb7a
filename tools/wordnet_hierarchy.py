"""Writes tresnet_nb/data/imagenet21k_wordnet_tree.tsv.gz: the WordNet 3.0 hypernym of every synset of the two
ImageNet-21K label sets (fall11, 11,221 classes; winter21, 10,450) and of their ancestors, up to ``entity``, and
the sense ranks that order the senses of a word shared by several of these synsets.

The package reads this file when the authors' tree file (imagenet21k_miil_tree.pth) is not at hand, so it never
needs WordNet at run time. Source: WordNet 3.0's ``data.noun`` and ``index.noun`` (Debian package
``wordnet-base``: /usr/share/wordnet; format in wndb(5WN)). ImageNet synset ids are 'n' + the 8-digit noun offset.
A row is ``offset<TAB>parent<TAB>lemmas<TAB>word=rank ...``: ``lemmas`` only for the ancestors whose lemmas timm
does not ship (about 900 synsets outside ImageNet, such as the genus 'iris'); ``rank`` is the synset's place
(1 = most frequent) among the senses index.noun lists for ``word``, only for words that two or more rows share.

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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tresnet_nb.heads21k.labels import LABEL_SETS, has_lemma, label_set  # noqa: E402
from tresnet_nb.heads21k.wordnet import LICENSE_FILE, TREE_FILE, WORDNET_NOTICE, read_tree_text  # noqa: E402

WORDNET = Path("/usr/share/wordnet")


def parse_data(data_noun: Path) -> tuple[dict[str, str | None], dict[str, list[str]]]:
    """Noun offset -> the offset of its parent by the rule above (None for ``entity``), and -> its words (as
    data.noun spells them: '_' for spaces), from ``data_noun``."""
    parents: dict[str, str | None] = {}
    words: dict[str, list[str]] = {}
    with open(data_noun, encoding="latin-1") as f:
        for line in f:
            if line.startswith(" "):  # the licence header: lines start with two spaces
                continue
            fields = line.split(" ")
            n_words = int(fields[3], 16)
            at = 4 + 2 * n_words  # offset, lex_filenum, ss_type, w_cnt, then (word, lex_id) pairs
            pointers = [fields[at + 1 + 4 * k : at + 5 + 4 * k] for k in range(int(fields[at]))]
            hyper = [p[1] for p in pointers if p[0] == "@" and p[2] == "n"]
            instance = [p[1] for p in pointers if p[0] == "@i" and p[2] == "n"]
            parents[fields[0]] = (hyper or instance or [None])[0]
            words[fields[0]] = [fields[4 + 2 * k] for k in range(n_words)]
    return parents, words


def parse_ranks(index_noun: Path) -> dict[tuple[str, str], int]:
    """(word, offset) -> the offset's sense number for ``word`` (1 = most frequent), from ``index_noun``."""
    ranks = {}
    with open(index_noun, encoding="latin-1") as f:
        for line in f:
            if line.startswith(" "):
                continue
            fields = line.split()
            # lemma, pos, synset_cnt, p_cnt, p_cnt pointer symbols, sense_cnt, tagsense_cnt, synset_cnt offsets
            offsets = fields[6 + int(fields[3]) :]
            for rank, offset in enumerate(offsets[: int(fields[2])], start=1):
                ranks[(fields[0], offset)] = rank
    return ranks


def tree_rows(parents: dict[str, str | None]) -> list[tuple[str, str]]:
    """(offset, parent offset or '') of every synset of the 21K label sets and of their ancestors, sorted."""
    keep: set[str] = set()
    for name in LABEL_SETS:
        if LABEL_SETS[name].hierarchy:
            for synset in label_set(name).synsets:
                offset = synset[1:]
                if offset not in parents:
                    raise KeyError(f"{synset} ({name}) is not a noun of this data.noun; is it WordNet 3.0?")
                while offset is not None and offset not in keep:
                    keep.add(offset)
                    offset = parents[offset]
    return sorted((o, parents[o] or "") for o in keep)


def sense_ranks(rows: list[tuple[str, str]], words: dict[str, list[str]], ranks: dict) -> dict[str, str]:
    """Offset -> 'word=rank ...' for the words (lower case, as index.noun has them) that two or more rows share."""
    lower = {o: [w.lower() for w in words[o]] for o, _ in rows}
    sharing: dict[str, int] = {}
    for offset, _ in rows:
        for word in lower[offset]:
            sharing[word] = sharing.get(word, 0) + 1
    return {o: " ".join(f"{w}={ranks[(w, o)]}" for w in lower[o] if sharing[w] > 1 and (w, o) in ranks)
            for o, _ in rows}  # fmt: skip


def render(rows: list[tuple[str, str]], words: dict[str, list[str]], senses: dict[str, str]) -> bytes:
    """The gzipped TSV (header comments, then the rows), byte-identical for identical rows."""
    lemmas = {o: "" if has_lemma(f"n{o}") else ", ".join(w.replace("_", " ") for w in words[o]) for o, _ in rows}
    lines = [f"{o}\t{p}\t{lemmas[o]}\t{senses[o]}".rstrip("\t") for o, p in rows]
    text = "".join(f"# {line}\n" for line in WORDNET_NOTICE.splitlines()) + "".join(f"{line}\n" for line in lines)
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0, compresslevel=9) as f:
        f.write(text.encode())
    return buffer.getvalue()


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
    parents, words = parse_data(args.wordnet / "data.noun")
    rows = tree_rows(parents)
    data = render(rows, words, sense_ranks(rows, words, parse_ranks(args.wordnet / "index.noun")))
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
