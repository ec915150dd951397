#!/usr/bin/env bash
# The committed accuracy runs: the first N GSM8K test problems on the embedded SmolLM2-135M,
# PSRM and self-reward, the paper's seek defaults (lr 0.03, rho 0.1, 10 steps, threshold -0.2,
# 1024 new tokens), the boxed prompt, as torchrun ranks of 1 thread each; then the report.
#
#   bash bench/accuracy.sh                 # both runs, then the report (2 ranks, N=32)
#   REWARDS=psrm bash bench/accuracy.sh    # one run; N, VERIFIER_TOKENS, NPROC, OUTDIR, DATA likewise
#
# Each run appends `<reward>.log` (the eval output and its wall time) and `<reward>.txt` (commit,
# versions, machine, settings, wall seconds: one line per run) in OUTDIR, then writes its report.
# An interrupted run continues with RESUME=1 (eval --resume: nothing lost or run twice).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-32}
# Self-reward verifier replies stop after this many new tokens (the paper's cap is 4096). At 128 the
# run projected ~2.5 h for 32 problems (Intel Xeon 2-core, 9441111: 22 in 104 min); at 64 it took
# 96 min on that machine (ad506ce), within the ~2-hour budget (results/accuracy/README.md).
VERIFIER_TOKENS=${VERIFIER_TOKENS:-64}
NPROC=${NPROC:-2}
REWARDS=${REWARDS:-"psrm self"}
OUTDIR=${OUTDIR:-bench/results/accuracy}
DATA=${DATA:-../shared/data/gsm8k_test.jsonl}
BATCH=${BATCH:-8}
# Self-reward: each problem in flight also decodes its 4 verifier prompts (each quoting a solution
# of up to 1024 tokens) as rows of the engine. Before the decoder fed long feeds in pieces (at
# most max_positions per forward) and grew its store 1.5x at a time, 4 problems per rank took a
# rank past 14 GB on the 24 GB machine (results/accuracy/README.md). 8 in flight fits (7 GB for both
# ranks) but is slower: 18.4 answer tok/s after 19 min against 26.0 at 4 (Intel Xeon 2-core, cap 128,
# ad506ce and 9441111, whose engines differ only in argument checks).
SELF_BATCH=${SELF_BATCH:-4}
mkdir -p "$OUTDIR"
resume=()
[[ "${RESUME:-0}" == 1 ]] && resume=(--resume)
for reward in $REWARDS; do
    extra=()
    batch=$BATCH
    [[ "$reward" == self ]] && extra=(--verifier-tokens "$VERIFIER_TOKENS") && batch=$SELF_BATCH
    start=$(date +%s)
    # The log streams line by line (tqdm's carriage returns become lines), so a long run shows
    # its progress as it goes.
    status=0
    torchrun --nproc-per-node "$NPROC" --no-python latentseek-fast eval --data "$DATA" --limit "$N" \
        --reward "$reward" --prompt boxed --threads 1 --batch-size "$batch" "${extra[@]}" \
        --out "$OUTDIR/$reward.jsonl" "${resume[@]}" 2>&1 \
        | stdbuf -oL tr '\r' '\n' | grep --line-buffered -v '^\s*$' | tee -a "$OUTDIR/$reward.log" \
        || status=$?
    wall=$(($(date +%s) - start))
    # The settings, then the benchmarks' own stamp (harness.env_info: machine, versions, commit),
    # also for a run that failed or was stopped (exit=...): its finished rows count on --resume.
    python - "$OUTDIR/$reward.txt" "reward=$reward" "problems=$N" "ranks=$NPROC" threads_per_rank=1 \
        "batch_size=$batch" "verifier_tokens=${extra[1]:-}" "wall_s=$wall" "exit=$status" \
        "resumed=${RESUME:-0}" <<'PY'
import sys

sys.path.insert(0, "bench")
from harness import env_info

path, *settings = sys.argv[1:]
stamp = {k: v for k, v in env_info().items() if k != "threads"}  # this process's, not the ranks'
with open(path, "a") as f:
    f.write(" ".join(settings + [f"{k}={v}" for k, v in stamp.items()]) + "\n")
PY
    [[ $status == 0 ]] || exit "$status"
    # This run's table and plots: <reward>_scaling.png, <reward>_rewards.png, <reward>_report.txt.
    latentseek-fast report "$OUTDIR/$reward.jsonl" --out "$OUTDIR/$reward.png" | tee "$OUTDIR/${reward}_report.txt"
done
if [[ -f "$OUTDIR/psrm.jsonl" && -f "$OUTDIR/self.jsonl" ]]; then
    latentseek-fast report "$OUTDIR/psrm.jsonl" --compare "$OUTDIR/self.jsonl" --out "$OUTDIR/report.png" \
        | tee "$OUTDIR/report.txt"
fi
