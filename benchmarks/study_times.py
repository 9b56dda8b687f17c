"""Where a finished study's time went: each training job's seconds per step, against fixed weights.

Reads the Snakemake benchmark file of every training job (``runs/<experiment>/seed<k>/
train.benchmark.tsv``, its wall seconds ``s``) and the job's ``steps.csv`` (its number of
micro-batches), and prints wall seconds per step (job start-up included) and the ratio to the
``fixed`` experiment, then the wall seconds of every kind of job. Wall time only: Snakemake's
``cpu_time`` is sampled while a job runs and misses its last stretch (a 45 s job can report 15 s).

    .venv/bin/python benchmarks/study_times.py results          # the default study's results
"""

from __future__ import annotations

import argparse
import csv
import statistics
from collections import defaultdict
from pathlib import Path


def _wall(path: Path) -> float:
    with path.open() as f:
        return float(next(csv.DictReader(f, delimiter="\t"))["s"])


def _steps(path: Path) -> int:
    with path.open() as f:
        return sum(1 for _ in f) - 1


def training_rows(results: Path) -> list[dict]:
    """One row per trained run: experiment, seed, steps, wall seconds and seconds per step."""
    rows = []
    for bench in sorted(results.glob("runs/*/seed*/train.benchmark.tsv")):
        steps = _steps(bench.with_name("steps.csv"))
        wall = _wall(bench)
        rows.append(
            {"experiment": bench.parent.parent.name, "seed": bench.parent.name, "steps": steps,
             "wall": wall, "per_step": wall / steps}
        )  # fmt: skip
    return rows


def job_totals(results: Path) -> dict[str, tuple[int, float]]:
    """Jobs and wall seconds per kind of job that wrote a Snakemake benchmark file."""
    totals: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    for bench in results.rglob("*.tsv"):
        if bench.name.endswith(".benchmark.tsv"):
            kind = bench.name.removesuffix(".benchmark.tsv")
        elif bench.parent.name == "benchmarks":
            kind = "_".join(bench.stem.split("_")[:2])  # the rule: build_cache_<scheme>_...
        else:
            continue
        totals[kind][0] += 1
        totals[kind][1] += _wall(bench)
    return {k: (int(v[0]), v[1]) for k, v in sorted(totals.items())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="a study's results directory")
    args = parser.parse_args()
    rows = training_rows(args.results)
    if not rows:
        raise SystemExit(f"no runs/*/seed*/train.benchmark.tsv under {args.results}")
    fixed = [r["per_step"] for r in rows if r["experiment"] == "fixed"]
    reference = statistics.median(fixed) if fixed else float("nan")
    print(f"{'experiment':<24}{'steps':>6}{'job s':>8}{'s/step':>9}{'x fixed':>9}")
    for r in rows:
        print(
            f"{r['experiment']:<24}{r['steps']:>6}{r['wall']:>8.1f}{r['per_step']:>9.3f}"
            f"{r['per_step'] / reference:>9.2f}"
        )
    print(f"\n{'job kind':<24}{'jobs':>6}{'wall s':>10}")
    for kind, (n, wall) in job_totals(args.results).items():
        print(f"{kind:<24}{n:>6}{wall:>10.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
