#!/usr/bin/python3
"""Writes the King James Bible as plain text, split into training and held-out parts.

Source: Debian's bible-kjv-text package (the KJV text of 1611; its copyright
has expired: public domain), read through the `bible` program of the
bible-kjv package, which decompresses /usr/lib/bible.data.

Layout of both files: for each chapter a heading line ("Genesis 1"), then
one verse per line without its verse number, then a blank line. Verse
numbers are dropped because they cost tokens and teach the model nothing
about English.

Split: chapters are numbered 0..1188 in canonical order (Genesis 1 is 0,
Revelation 22 is 1188); chapter c is held out when c % 25 == 12 (48
chapters, about 4% of the text, spread over the whole book so that the
held-out part has the same mixture of law, poetry, prophecy and letters).

Usage: prepare_corpus.py OUT_DIR   (writes train.txt and heldout.txt)
"""

import re
import subprocess
import sys
from pathlib import Path

HELDOUT_EVERY = 25
HELDOUT_OFFSET = 12


def read_chapters():
    """Returns [(heading, [verse, ...]), ...] in canonical order."""
    # -l with a huge width: one line per verse, no re-wrapping.
    text = subprocess.run(["bible", "-l1000000", "Gen1:1-Rev22:21"], check=True,
                          capture_output=True, text=True).stdout
    chapters = []
    verse_re = re.compile(r"^\s+(\d+) (.*)$")
    for line in text.splitlines():
        if not line.strip():
            continue
        m = verse_re.match(line)
        if m:
            chapters[-1][1].append(m.group(2).strip())
        else:
            chapters.append((line.strip(), []))
    return chapters


def main():
    out_dir = Path(sys.argv[1])
    out_dir.mkdir(parents=True, exist_ok=True)
    chapters = read_chapters()
    if len(chapters) != 1189:
        sys.exit(f"expected 1189 chapters, found {len(chapters)}")
    train, heldout = [], []
    for c, (heading, verses) in enumerate(chapters):
        block = heading + "\n" + "".join(v + "\n" for v in verses) + "\n"
        (heldout if c % HELDOUT_EVERY == HELDOUT_OFFSET else train).append(block)
    (out_dir / "train.txt").write_text("".join(train), encoding="utf-8")
    (out_dir / "heldout.txt").write_text("".join(heldout), encoding="utf-8")
    print(f"{len(train)} training chapters, {len(heldout)} held-out chapters")


if __name__ == "__main__":
    main()
