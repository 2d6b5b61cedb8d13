#!/usr/bin/env python3
"""Extract the King James Bible from Debian's `bible-kjv` packages into plain text, one verse per line.

Source: `bible-kjv-text` (the compressed text in /usr/lib/bible.data) read through the `bible` program of
`bible-kjv` (`apt-get install -y bible-kjv`). `bible -f` turns pretty-printing off, so every verse comes out
on one line as "<Book><chapter>:<verse> <text>", e.g. "Ge1:1 In the beginning God created ...".

The reference is dropped: each output line is the verse text only, which is what the tiny model learns
to generate. The split is by whole books: HELDOUT_BOOKS go to the held-out file (committed as
testdata/kjv/heldout.txt), every other book goes to the train file (regenerated, not committed).

Usage: python3 tools/kjv_corpus.py --train .corpus/train.txt --heldout testdata/kjv/heldout.txt
"""
import argparse
import re
import subprocess
import sys

# Book names as `bible` abbreviates them in its references.
HELDOUT_BOOKS = ("Ruth", "Jonah", "Phmn", "Jude")
EXPECTED_VERSES = 31102  # Genesis 1:1 .. Revelation 22:21 in the KJV

REF = re.compile(r"^([1-3]?[A-Za-z]+)(\d+):(\d+) (.+)$")


def read_bible():
    """Returns [(book, chapter, verse, text)] for the whole Bible, in order."""
    try:
        out = subprocess.run(["bible", "-f", "gen1:1-rev22:21"], check=True, capture_output=True,
                             text=True, encoding="ascii").stdout
    except FileNotFoundError:
        sys.exit("kjv_corpus: the `bible` program is missing (apt-get install -y bible-kjv)")
    verses = []
    for n, line in enumerate(out.splitlines(), 1):
        m = REF.match(line)
        if not m:
            sys.exit(f"kjv_corpus: line {n} of `bible -f` output has no verse reference: {line[:60]!r}")
        text = " ".join(m.group(4).split())  # collapse any doubled spaces
        verses.append((m.group(1), int(m.group(2)), int(m.group(3)), text))
    if len(verses) != EXPECTED_VERSES:
        sys.exit(f"kjv_corpus: expected {EXPECTED_VERSES} verses, got {len(verses)}")
    return verses


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", required=True, help="output file for the training books")
    ap.add_argument("--heldout", required=True, help="output file for the held-out books")
    args = ap.parse_args()

    verses = read_bible()
    books = {v[0] for v in verses}
    missing = [b for b in HELDOUT_BOOKS if b not in books]
    if missing:
        sys.exit(f"kjv_corpus: held-out books not found in the text: {missing}")
    train = [v[3] for v in verses if v[0] not in HELDOUT_BOOKS]
    held = [v[3] for v in verses if v[0] in HELDOUT_BOOKS]
    for path, lines in ((args.train, train), (args.heldout, held)):
        with open(path, "w", encoding="ascii", newline="\n") as f:
            f.write("\n".join(lines) + "\n")
    print(f"train: {len(train)} verses -> {args.train}; held-out ({', '.join(HELDOUT_BOOKS)}): "
          f"{len(held)} verses -> {args.heldout}")


if __name__ == "__main__":
    main()
