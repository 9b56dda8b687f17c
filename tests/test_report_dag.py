"""Each table and figure of the default config is built by a DAG of only the jobs it reads.

For every table/figure job of the paper's dry run, the dry run of that one output must schedule
training jobs for exactly the experiments whose runs its inputs read (directly, or every
trained experiment when it reads the tidy table, which aggregates every run), and none when it
reads no run.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from echomtl.config import load_experiments

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
_JOB = re.compile(r"^rule (\w+):\n((?:    .*\n)+)", re.M)


def dry_run(results: Path, *targets: str) -> list[dict[str, str]]:
    """The jobs of ``snakemake -n --forceall`` (rule, input, output, wildcards)."""
    run = subprocess.run(
        [SNAKEMAKE, "-n", "--forceall", *targets, "--config", f"results_dir={results}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    jobs = []
    for rule, body in _JOB.findall(run.stdout):
        fields = dict(re.findall(r"^    (\w+): (.*)$", body, re.M))
        jobs.append({"rule": rule, **fields})
    return jobs


def experiments_of(paths: str, results: Path) -> set[str]:
    """Experiments whose run folders appear in a comma-separated list of paths."""
    runs = re.escape(str(results / "runs"))
    # a run's accumulated-gradient measurement reads that run's snapshots
    measured = re.escape(str(results / "stats" / "interference"))
    # a grid's selection reads its rows' runs: a job waiting on the checkpoint select_group (the
    # chosen manual weight's decisive seeds come after it) lists the selection file as input
    selected = re.escape(str(results / "selection"))
    groups = set(re.findall(selected + r"/([^/,\s]+)\.json", paths))
    table = load_experiments(ROOT / "config" / "experiments.tsv")
    return (
        set(re.findall(runs + r"/([^/,\s]+)/seed\d+", paths))
        | set(re.findall(measured + r"/([^/,\s]+)\.json", paths))
        | {str(n) for n in table.index if table.at[n, "group"] in groups}
    )


@pytest.fixture(scope="module")
def paper_jobs(tmp_path_factory):
    results = tmp_path_factory.mktemp("dag") / "results"
    jobs = dry_run(results)
    return results, jobs


@pytest.mark.slow
def test_every_output_schedules_only_the_runs_it_reads(paper_jobs):
    results, jobs = paper_jobs
    trained = {
        j["wildcards"].split("experiment=")[1].split(",")[0] for j in jobs if j["rule"] == "train"
    }
    outputs = [j for j in jobs if j["rule"] in ("table", "figure")]
    assert len(outputs) >= 15, [j["output"] for j in outputs]
    reads_tidy = {}
    for job in outputs:
        target = job["output"].split(",")[0].strip()
        reads_tidy[target] = str(results / "tidy.csv") in job.get("input", "")
        expected = trained if reads_tidy[target] else experiments_of(job.get("input", ""), results)
        own = dry_run(results, target)
        scheduled = {
            j["wildcards"].split("experiment=")[1].split(",")[0]
            for j in own
            if j["rule"] == "train"
        }
        assert scheduled == expected, (target, sorted(scheduled ^ expected))
        rules = {j["rule"] for j in own}
        if not expected:
            assert not rules & {"train", "evaluate", "build_cache"}, (target, rules)
        # one output, one table/figure job: never the union of every table's inputs
        assert sum(j["rule"] in ("table", "figure") for j in own) == 1, target
    # the outputs that read only data audits or the reference's runs stay that small
    by_name = {Path(t).stem: t for t in reads_tidy}
    assert not reads_tidy[by_name["dataset"]] and not reads_tidy[by_name["leakage"]]
    assert not reads_tidy[by_name["confusion_matrix"]]
