#!/usr/bin/env bash
# Proof that the workflow runs under SLURM: a tiny study through a one-node SLURM cluster on this
# machine, every job submitted with sbatch, compared with the same study run locally.
#
#   scripts/slurm-local-proof.sh    # as root (the cluster script installs and starts slurm)
#
# 1. starts the cluster: scripts/slurm-local-cluster.sh start (apt-get install on first use);
# 2. writes the tiny study (3 experiments, 24/8/8 synthetic images, 64 px, 1 epoch) as a config
#    overlay and runs it with --workflow-profile profiles/slurm-local into <work>/slurm, with
#    ECHOMTL_SUBMIT_ALL=1 so that no rule is local (see docs/slurm.md: the Snakefile's localrules
#    are skipped when it is set), targets: the test metrics of every run and the table main.tex;
# 3. runs the same study locally (--cores 2, profiles/default) into <work>/local;
# 4. checks that every job of the SLURM run was submitted with sbatch (the plugin's "submitted
#    with SLURM jobid" lines, no "localrule", and SLURM's own list of the run's jobs: squeue), that
#    they all COMPLETED, and that metrics_{valid,test}.json of every run (all fields but
#    `versions`), predictions_test.json, steps.csv (per-step losses) and tables/main.tex are
#    identical in the two runs;
# 5. prints PASS or FAIL; the evidence is in <work>/slurm-submissions.log.
# The daemons are stopped at exit (scripts/slurm-local-cluster.sh stop) unless the cluster was
# already running before or SLURM_PROOF_KEEP_CLUSTER=1.
#
# Environment: SLURM_PROOF_DIR (default /tmp/echomtl-slurm-proof; recreated, must be under /tmp).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly REPO
readonly WORK="${SLURM_PROOF_DIR:-/tmp/echomtl-slurm-proof}"
readonly SNAKEMAKE="${REPO}/.venv/bin/snakemake"
readonly PYTHON="${REPO}/.venv/bin/python"
readonly CLUSTER="${REPO}/scripts/slurm-local-cluster.sh"
readonly EXPERIMENTS=(det_only fixed gradnorm_a1.5) # gradnorm_a1.5: the report's reference
readonly EVIDENCE="${WORK}/slurm-submissions.log"

log() { printf '[slurm-proof] %s\n' "$*"; }
die() {
  log "ERROR: $*" >&2
  exit 1
}

[[ -x "$SNAKEMAKE" ]] || die "${SNAKEMAKE} missing: run \`make setup\` first"
# The work directory is deleted and recreated: only a dedicated directory under /tmp.
[[ "$WORK" == /tmp/?* && "$WORK" != *..* ]] || die "SLURM_PROOF_DIR must be a directory under /tmp"

# --- cluster ------------------------------------------------------------------------------------
was_running=0
if "$CLUSTER" status >/dev/null 2>&1; then was_running=1; fi
# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
  local rc=$?
  if ((was_running == 0)) && [[ "${SLURM_PROOF_KEEP_CLUSTER:-0}" != 1 ]]; then
    log "stopping the cluster (scripts/slurm-local-cluster.sh stop)"
    "$CLUSTER" stop || true
  else
    log "leaving the cluster running (it ran before, or SLURM_PROOF_KEEP_CLUSTER=1)"
  fi
  exit "$rc"
}
trap cleanup EXIT

t_start=$(date +%s)
log "starting the one-node cluster"
"$CLUSTER" start
t_cluster=$(date +%s)

# --- tiny study ---------------------------------------------------------------------------------
rm -rf "$WORK"
mkdir -p "$WORK"
printf '%s\t' experiment group method model w_det w_cls alpha augment >"${WORK}/experiments.tsv"
printf 'description\n' >>"${WORK}/experiments.tsv"
cat >>"${WORK}/experiments.tsv" <<'EOF'
det_only	det_only	fixed	det_only	1.0	0.0		false	detector alone
fixed	fixed	fixed	multitask	1.0	0.01		false	fixed weights
gradnorm_a1.5	gradnorm_a1.5	gradnorm	multitask	1.0	0.01	1.5	false	GradNorm 1.5
EOF
# One overlay per run; only results_dir differs (over config/config.yaml, like tests/test_workflow).
write_overlay() {
  cat >"${WORK}/tiny-$1.yaml" <<EOF
# Tiny study of scripts/slurm-local-proof.sh, over config/config.yaml.
results_dir: ${WORK}/$1
experiments: ${WORK}/experiments.tsv
synthetic:
  seed: 1
  sizes: {train: 24, valid: 8, test: 8}
  frames_per_video: 2
  videos_per_patient: 2
data:
  grouped_fractions: {train: 0.6, valid: 0.2, test: 0.2}
  min_patients: 2
model: {imgsz: 64}
train: {epochs: 1, batch_size: 8, nominal_batch: 8, threads: 1, device: cpu}
report: {bootstrap_resamples: 20}
EOF
}
targets() {
  local e
  for e in "${EXPERIMENTS[@]}"; do
    printf '%s\n' "${WORK}/$1/runs/${e}/seed0/metrics_test.json"
  done
  printf '%s\n' "${WORK}/$1/paper/tables/main.tex"
}
write_overlay slurm
write_overlay local
mapfile -t slurm_targets < <(targets slurm)
mapfile -t local_targets < <(targets local)

cd "$REPO"
export MPLBACKEND=Agg

# Other people edit this tree: a change of the code between the two runs would make them differ
# for a reason that has nothing to do with SLURM. Fingerprint it before and after.
source_fingerprint() {
  find Snakefile rules workflow src config paper -type f ! -name '*.pyc' -print0 | sort -z |
    xargs -0 sha256sum | sha256sum | cut -c1-16
}
fingerprint_before=$(source_fingerprint)

# --- SLURM run: every job through sbatch ---------------------------------------------------------
log "SLURM run: snakemake --workflow-profile profiles/slurm-local (log: ${WORK}/slurm-run.log)"
set +e
ECHOMTL_SUBMIT_ALL=1 "$SNAKEMAKE" --workflow-profile profiles/slurm-local \
  --slurm-logdir "${WORK}/slurm/slurm_logs" \
  --configfile "${WORK}/tiny-slurm.yaml" -- "${slurm_targets[@]}" >"${WORK}/slurm-run.log" 2>&1
slurm_rc=$?
set -e
t_slurm=$(date +%s)
log "SLURM run exit status ${slurm_rc} ($((t_slurm - t_cluster)) s)"
if ((slurm_rc != 0)); then tail -n 40 "${WORK}/slurm-run.log"; fi

# --- local run ----------------------------------------------------------------------------------
log "local run: snakemake --cores 2 (log: ${WORK}/local-run.log)"
set +e
"$SNAKEMAKE" --cores 2 --configfile "${WORK}/tiny-local.yaml" -- "${local_targets[@]}" \
  >"${WORK}/local-run.log" 2>&1
local_rc=$?
set -e
t_local=$(date +%s)
log "local run exit status ${local_rc} ($((t_local - t_slurm)) s)"
if ((local_rc != 0)); then tail -n 40 "${WORK}/local-run.log"; fi

fingerprint_after=$(source_fingerprint)

# --- evidence: what went through sbatch ---------------------------------------------------------
run_id=$(sed -n 's/.*SLURM run ID: \([^ ]*\).*/\1/p' "${WORK}/slurm-run.log" | head -n 1)
# The jobs planned: the total of the last "N of M steps done" line, not the first "Job stats"
# table, which a checkpoint outdates: a decisive grid's chosen point adds its trainings after the
# table is printed (seen here: one run's table said 95, its progress lines ended "of 105 steps").
n_planned=$(sed -n 's/^[0-9]* of \([0-9]*\) steps ([0-9]*%) done$/\1/p' "${WORK}/slurm-run.log" |
  tail -n 1)
n_submitted=$(grep -c 'has been submitted with SLURM jobid' "${WORK}/slurm-run.log" || true)
n_local=$(grep -c '^localrule ' "${WORK}/slurm-run.log" || true)
squeue_rows=""
if [[ -n "$run_id" ]]; then
  # SLURM's own record (finished jobs stay in squeue for MinJobAge=3600 s on the test cluster):
  # jobid|state|elapsed|partition|CPUs|memory|time limit|comment (the plugin's comment:
  # rule_<rule>_wildcards_<wildcards>).
  squeue_rows=$(squeue --states=all --noheader --name "$run_id" -o '%i|%T|%M|%P|%C|%m|%l|%k' |
    sort -n)
fi
n_slurm_jobs=$(grep -c . <<<"$squeue_rows" || true)
n_completed=$(grep -c '|COMPLETED|' <<<"$squeue_rows" || true)
{
  echo "# scripts/slurm-local-proof.sh, $(date -u +%FT%TZ), $(sinfo --version 2>/dev/null)"
  echo "# SLURM run ID (sbatch --job-name): ${run_id:-none}"
  echo "## submissions (snakemake log)"
  grep -E 'has been submitted with SLURM jobid|^localrule ' "${WORK}/slurm-run.log" || true
  echo "## SLURM's record: squeue --states=all --name ${run_id:-?}"
  echo "jobid|state|elapsed|partition|cpus|mem|timelimit|comment"
  printf '%s\n' "$squeue_rows"
  echo "## jobs by rule (squeue comments)"
  awk -F'|' 'NF >= 8 {r = $8; sub(/^rule_/, "", r); sub(/_wildcards_.*/, "", r); print r}' \
    <<<"$squeue_rows" | sort | uniq -c
} >"$EVIDENCE"

# --- comparison of the two runs -----------------------------------------------------------------
set +e
"$PYTHON" - "$WORK" "${EXPERIMENTS[@]}" <<'EOF' | tee "${WORK}/comparison.txt"
"""Metrics of the SLURM run == metrics of the local run (all fields but `versions`)."""
import json
import math
import sys
from pathlib import Path

work, experiments = Path(sys.argv[1]), sys.argv[2:]
IGNORED = {"versions"}  # library versions: legitimately per machine; no path or time is stored


def load(path):
    data = json.loads(path.read_text())
    return {k: v for k, v in data.items() if k not in IGNORED} if isinstance(data, dict) else data


def diff(a, b, where=""):
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{where}.{k}: only in one run" for k in sorted(set(a) ^ set(b))]
        return out + [d for k in sorted(set(a) & set(b)) for d in diff(a[k], b[k], f"{where}.{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in diff(x, y, f"{where}[{i}]")]
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return []
    return [] if a == b else [f"{where}: slurm {a!r} != local {b!r}"]


bad = 0
print(f"{'run':<30} {'split':<6} {'mAP50':>8} {'mAP50-95':>9} {'acc':>7}  slurm == local")
for name in experiments:
    for split in ("valid", "test"):
        rel = Path("runs", name, "seed0", f"metrics_{split}.json")
        try:
            s, l = load(work / "slurm" / rel), load(work / "local" / rel)
        except (OSError, ValueError) as err:
            print(f"{name:<30} {split:<6} missing: {err}")
            bad += 1
            continue
        d = diff(s, l)
        bad += bool(d)
        acc = (s.get("classification") or {}).get("accuracy")
        acc = "-" if acc is None else f"{acc:.4f}"
        det = s["detection"]
        print(
            f"{name:<30} {split:<6} {det['map50']:>8.4f} {det['map50_95']:>9.4f} {acc:>7}  "
            + ("identical" if not d else f"DIFFERENT: {'; '.join(d[:5])}")
        )
# Byte for byte: every predicted box and score, the loss of every training step, a report table.
others = [
    Path("runs", n, "seed0", f) for n in experiments for f in ("predictions_test.json", "steps.csv")
]
others.append(Path("paper", "tables", "main.tex"))
for rel in others:
    a, b = work / "slurm" / rel, work / "local" / rel
    same = a.is_file() and b.is_file() and a.read_bytes() == b.read_bytes()
    bad += not same
    what = ""
    if same and rel.name == "predictions_test.json":
        images = json.loads(a.read_text())["images"]
        what = f" ({len(images)} images, {sum(len(i['pred']) for i in images)} predicted boxes)"
    elif same and rel.suffix == ".csv":
        what = f" ({len(a.read_text().splitlines()) - 1} steps)"
    print(f"{str(rel):<47} {'identical' if same else 'DIFFERENT or missing'}{what}")
sys.exit(1 if bad else 0)
EOF
compare_rc=${PIPESTATUS[0]}
set -e
cat "${WORK}/comparison.txt" >>"$EVIDENCE"

# --- verdict ------------------------------------------------------------------------------------
t_end=$(date +%s)
reasons=()
((slurm_rc == 0)) || reasons+=("SLURM run failed (exit ${slurm_rc})")
((local_rc == 0)) || reasons+=("local run failed (exit ${local_rc})")
[[ -n "$n_planned" && "$n_submitted" -eq "$n_planned" ]] ||
  reasons+=("${n_submitted} of ${n_planned:-?} jobs submitted with sbatch")
((n_local == 0)) || reasons+=("${n_local} jobs ran as localrule")
[[ "$n_slurm_jobs" -eq "${n_planned:-0}" && "$n_completed" -eq "$n_slurm_jobs" ]] ||
  reasons+=("squeue lists ${n_slurm_jobs} jobs of the run, ${n_completed} COMPLETED")
code_changed=""
if [[ "$fingerprint_before" != "$fingerprint_after" ]]; then
  code_changed="the code (Snakefile rules workflow src config paper) changed during the proof"
fi
if ((compare_rc != 0)); then
  reasons+=("SLURM and local results differ${code_changed:+ (${code_changed}: rerun)}")
elif [[ -n "$code_changed" ]]; then
  # Identical results despite an edit elsewhere in the tree: still a valid comparison.
  log "note: ${code_changed}; the compared outputs are identical all the same" | tee -a "$EVIDENCE"
fi

summary="jobs planned ${n_planned:-?}, submitted with sbatch ${n_submitted}, local ${n_local}, "
summary+="SLURM jobs COMPLETED ${n_completed}/${n_slurm_jobs}; times: cluster start "
summary+="$((t_cluster - t_start)) s, SLURM run $((t_slurm - t_cluster)) s, local run "
summary+="$((t_local - t_slurm)) s, total $((t_end - t_start)) s"
log "$summary"
echo "# ${summary}" >>"$EVIDENCE"
log "evidence (submissions, SLURM's job list, comparison): ${EVIDENCE}"
log "logs: ${WORK}/slurm-run.log, ${WORK}/local-run.log; SLURM job logs: ${WORK}/slurm/slurm_logs"
if ((${#reasons[@]} == 0)); then
  echo "PASS: every job of the tiny study went through sbatch; its results equal the local run's" |
    tee -a "$EVIDENCE"
  exit 0
fi
printf 'FAIL: %s\n' "$(
  IFS=';'
  echo "${reasons[*]}"
)" | tee -a "$EVIDENCE"
exit 1
