"""Compare two results folders of the same study, byte for byte (a refactor must keep every
number; scripts/same-outputs.sh runs both studies and calls this).

    python scripts/compare_outputs.py BEFORE/results AFTER/results

Compares the tidy table (``tidy.csv``; ``paper/tidy.csv`` before the evaluation stage owned
it), ``paper/numbers.tex``, ``paper/main.tex``, every ``paper/tables/*.tex`` and every run's
``metrics_*.json``, ``steps.csv`` and ``diagnostics.csv`` (``runs/**``). The results folder's
own absolute path is replaced by ``<results>`` first (``main.tex`` names the bibliography by
its absolute path, for BibTeX). Prints one line per file that differs or
exists on one side only, and exits 1 if any does; 0 means every compared file is identical.
Figures and the PDF are not compared: matplotlib and TeX embed dates and their own ids.

Training wall-clock seconds (Snakemake's benchmark files) differ between any two runs, even of
one commit, and reach the tidy table, ``numbers.tex`` and the tables that show cost; the shell
script therefore compares a second time after giving the second study the first one's
benchmark files.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

PATTERNS = (
    "tidy.csv",
    "paper/tidy.csv",
    "paper/numbers.tex",
    "paper/main.tex",
    "paper/tables/*.tex",
    "runs/**/metrics_*.json",
    "runs/**/steps.csv",
    "runs/**/diagnostics.csv",
)
#: Files that moved between stages: compared under their new name.
MOVED = {"paper/tidy.csv": "tidy.csv"}


def digests(root: Path) -> dict[str, str]:
    """``{path relative to root: sha256}`` of every compared file."""
    out = {}
    for pattern in PATTERNS:
        for p in sorted(root.glob(pattern)):
            name = str(p.relative_to(root))
            data = p.read_bytes().replace(str(root.resolve()).encode(), b"<results>")
            out[MOVED.get(name, name)] = hashlib.sha256(data).hexdigest()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    args = parser.parse_args(argv)
    a, b = digests(args.before), digests(args.after)
    if not a or not b:
        print(f"nothing to compare: {len(a)} files in {args.before}, {len(b)} in {args.after}")
        return 1
    problems = [f"only in {args.before}: {k}" for k in sorted(a.keys() - b.keys())]
    problems += [f"only in {args.after}: {k}" for k in sorted(b.keys() - a.keys())]
    problems += [f"differs: {k}" for k in sorted(a.keys() & b.keys()) if a[k] != b[k]]
    for line in problems:
        print(line)
    same = len(a.keys() & b.keys()) - sum(p.startswith("differs") for p in problems)
    print(f"{same} of {len(a.keys() | b.keys())} files byte-identical")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
