"""Run every benchmark of the project and print one summary (one command for all figures).

    .venv/bin/python benchmarks/run_all.py            # about 10 minutes on 2 CPU cores
    .venv/bin/python benchmarks/run_all.py --study    # + the whole default study (about 15 min)

Each benchmark is its own script (run it alone for details); this driver runs them one after the
other on an otherwise idle machine, saves each output under ``results/benchmarks/`` and prints
the wall time of each. Speed is measured here, never asserted in tests.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))

BENCHMARKS = {
    # needs .venv-peer (benchmarks/bench_peer.py --setup, once)
    "peer_train_step": [PYTHON, "benchmarks/bench_peer.py"],
    "train_step": [PYTHON, "benchmarks/bench_train_step.py", "--variants", "det_only", "multitask"],
    "data_loader": [PYTHON, "benchmarks/bench_data.py", "--train", "320", "--valid", "0",
                    "--test", "0"],
    "balancing": [PYTHON, "benchmarks/bench_balancing.py"],
    "evaluation": [PYTHON, "benchmarks/bench_evaluation.py"],
    "dryrun_paper_config": [SNAKEMAKE, "-n", "--quiet", "rules", "--configfile",
                            "config/paper.yaml"],
}  # fmt: skip


def run(name: str, command: list[str], out_dir: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - started
    (out_dir / f"{name}.txt").write_text(result.stdout + result.stderr)
    status = "ok" if result.returncode == 0 else f"FAILED ({result.returncode})"
    print(f"== {name}: {status}, {seconds:.1f} s")
    print(result.stdout.rstrip())
    if result.returncode != 0:
        print(result.stderr[-2000:])
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", action="store_true", help="also time the default study")
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), help="a subset")
    args = parser.parse_args()
    out_dir = ROOT / "results" / "benchmarks"
    out_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.setdefault("REGURG_DATA", str(ROOT.parent / "shared" / "data" / "regurgitation-yolo"))
    for name in args.only or BENCHMARKS:
        run(name, BENCHMARKS[name], out_dir, env)
    if args.study:
        with tempfile.TemporaryDirectory() as tmp:
            command = [SNAKEMAKE, "--cores", "2", "--config", f"results_dir={tmp}/results"]
            seconds = run("default_study", command, out_dir, env)
        print(f"default study wall time: {seconds / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
