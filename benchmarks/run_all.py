"""Run every benchmark of the project and print one summary (one command for all figures).

    .venv/bin/python benchmarks/run_all.py            # about 12 minutes on 2 CPU cores
    .venv/bin/python benchmarks/run_all.py --study    # + the whole default study (about 11 min)

Each benchmark is its own script (run it alone for details); this driver runs them one after the
other on an otherwise idle machine, saves each output under ``results/benchmarks/`` and prints
the wall time of each, then a summary: the training step's ratio to the packaged YOLOv5 v7.0
measured side by side (``bench_peer.py``), and with ``--study`` the default study's wall time and
each method's seconds per training step inside it, against fixed weights (``study_times.py``).
Speed is measured here, never asserted in tests.
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
    "loader_640": [PYTHON, "benchmarks/bench_loader.py", "--scale", "n", "--batch", "8"],
    "amp_gradnorm": [PYTHON, "benchmarks/check_amp_gradnorm.py"],
    "balancing": [PYTHON, "benchmarks/bench_balancing.py"],
    "evaluation": [PYTHON, "benchmarks/bench_evaluation.py"],
    "dryrun_paper_config": [SNAKEMAKE, "-n", "--quiet", "rules", "--configfile",
                            "config/paper.yaml"],
}  # fmt: skip


def run(name: str, command: list[str], out_dir: Path, env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - started
    (out_dir / f"{name}.txt").write_text(result.stdout + result.stderr)
    status = "ok" if result.returncode == 0 else f"FAILED ({result.returncode})"
    print(f"== {name}: {status}, {seconds:.1f} s")
    print(result.stdout.rstrip())
    if result.returncode != 0:
        print(result.stderr[-2000:])
    return seconds, result.stdout if result.returncode == 0 else ""


def peer_ratios(output: str) -> list[str]:
    """The rows of bench_peer's table (scale, size, ..., ratio) from its printed output."""
    rows = []
    for line in output.splitlines():
        cells = line.split()
        if len(cells) == 9 and cells[0] in ("n", "s", "m", "l", "x") and cells[7].endswith("x"):
            rows.append(f"  yolov5{cells[0]} {cells[1]:>4} px: {cells[7]}  (losses {cells[2]} / "
                        f"{cells[3]}, max grad diff {cells[4]})")  # fmt: skip
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", action="store_true", help="also time the default study")
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), help="a subset")
    args = parser.parse_args()
    out_dir = ROOT / "results" / "benchmarks"
    out_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.setdefault("REGURG_DATA", str(ROOT.parent / "shared" / "data" / "regurgitation-yolo"))
    names = args.only or list(BENCHMARKS)
    outputs = {name: run(name, BENCHMARKS[name], out_dir, env)[1] for name in names}
    summary = []
    if outputs.get("peer_train_step"):
        summary += ["training step, the peer's seconds over ours (> 1: ours faster):"]
        summary += peer_ratios(outputs["peer_train_step"])
    if args.study:
        with tempfile.TemporaryDirectory() as tmp:
            command = [SNAKEMAKE, "--cores", "2", "--config", f"results_dir={tmp}/results"]
            seconds, _ = run("default_study", command, out_dir, env)
            _, times = run("study_times", [PYTHON, "benchmarks/study_times.py", f"{tmp}/results"],
                           out_dir, env)  # fmt: skip
        summary += [f"default study, data to PDF: {seconds / 60:.1f} min wall", times.rstrip()]
    if summary:
        print("\n== summary (" + time.strftime("%Y-%m-%d") + ")\n" + "\n".join(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
