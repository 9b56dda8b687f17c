"""Where a finished study's time went: each training job's seconds per step, against fixed weights.

Reads the Snakemake benchmark file of every training job (``runs/<experiment>/seed<k>/
train.benchmark.tsv``: wall ``s`` and ``cpu_time``) and the job's ``steps.csv`` (its number of
micro-batches), and prints seconds per step and the ratio to the ``fixed`` experiment, for the
wall clock and for CPU time (the CPU ratio is what the method costs; the wall ratio also carries
whatever else ran on the machine), then the totals of every job kind.

    .venv/bin/python benchmarks/study_times.py results          # the default study's results
"""

from __future__ import annotations

import argparse
import csv
import statistics
from collections import defaultdict
from pathlib import Path


def _benchmark(path: Path) -> tuple[float, float]:
    with path.open() as f:
        row = next(csv.DictReader(f, delimiter="\t"))
    return float(row["s"]), float(row["cpu_time"])


def _steps(path: Path) -> int:
    with path.open() as f:
        return sum(1 for _ in f) - 1


def training_rows(results: Path) -> list[dict]:
    """One row per trained run: experiment, seed, steps, wall and CPU seconds per step."""
    rows = []
    for bench in sorted(results.glob("runs/*/seed*/train.benchmark.tsv")):
        steps = _steps(bench.with_name("steps.csv"))
        wall, cpu = _benchmark(bench)
        experiment = bench.parent.parent.name
        rows.append(
            {"experiment": experiment, "seed": bench.parent.name, "steps": steps,
             "wall_per_step": wall / steps, "cpu_per_step": cpu / steps, "wall": wall, "cpu": cpu}
        )  # fmt: skip
    return rows


def job_totals(results: Path) -> dict[str, tuple[int, float, float]]:
    """Jobs, wall and CPU seconds per kind of job that wrote a Snakemake benchmark file."""
    totals: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0.0])
    for bench in results.rglob("*.tsv"):
        if bench.name.endswith(".benchmark.tsv"):
            kind = bench.name.removesuffix(".benchmark.tsv")
        elif bench.parent.name == "benchmarks":
            kind = bench.stem.split("_")[0] + "_" + bench.stem.split("_")[1]
        else:
            continue
        wall, cpu = _benchmark(bench)
        entry = totals[kind]
        entry[0] += 1
        entry[1] += wall
        entry[2] += cpu
    return {k: (int(v[0]), v[1], v[2]) for k, v in sorted(totals.items())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="a study's results directory")
    args = parser.parse_args()
    rows = training_rows(args.results)
    if not rows:
        raise SystemExit(f"no runs/*/seed*/train.benchmark.tsv under {args.results}")
    fixed = [r for r in rows if r["experiment"] == "fixed"]
    ref_wall = statistics.median(r["wall_per_step"] for r in fixed) if fixed else float("nan")
    ref_cpu = statistics.median(r["cpu_per_step"] for r in fixed) if fixed else float("nan")
    print(f"{'experiment':<24}{'steps':>6}{'wall s/step':>12}{'x fixed':>8}{'CPU s/step':>11}"
          f"{'x fixed':>8}")  # fmt: skip
    for r in rows:
        print(
            f"{r['experiment']:<24}{r['steps']:>6}{r['wall_per_step']:>12.3f}"
            f"{r['wall_per_step'] / ref_wall:>8.2f}{r['cpu_per_step']:>11.3f}"
            f"{r['cpu_per_step'] / ref_cpu:>8.2f}"
        )
    print(f"\n{'job kind':<24}{'jobs':>6}{'wall s':>10}{'CPU s':>10}")
    for kind, (n, wall, cpu) in job_totals(args.results).items():
        print(f"{kind:<24}{n:>6}{wall:>10.1f}{cpu:>10.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
