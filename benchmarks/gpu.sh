#!/usr/bin/env bash
# What a lent GPU measures, in one run of under 8 minutes; results in $OUT/gpu.json.
#
#   bash benchmarks/gpu.sh              # on the GPU machine (the device tool: carry [".gpu-data"])
#   GPU_SECTIONS="env burda vampprior" bash benchmarks/gpu.sh   # a second call: the long presets
#   GPU_SECTIONS="env vampprior10" GPU_LONG_MINUTES=5 bash benchmarks/gpu.sh   # the NLL curve's recipe
#   bash benchmarks/gpu.sh --dry-run    # here, on the CPU, tiny sizes, every section: proves the
#                                       # plumbing and the JSON (also VAELAB_GPU_DRY=1)
#
# Sections, in order, each under `timeout` and cut shorter when the total budget runs low
# (GPU_SECTIONS picks them: env speed_eager speed_compiled preset burda vampprior vampprior10; by
# default the first four, which fill the budget; "preset" is preset_train, preset_eval and nll_speed):
#   env          machine facts: nvidia-smi, torch and CUDA, vaelab's dependencies, where MNIST comes from
#   speed_eager  train_speed.py --device cuda --eager: the PyTorch example against vaelab's eager step
#   speed_compiled  the same with --compile --compile-mode reduce-overhead (CUDA graphs), the eager step beside it
#   preset_train the best preset (mnist-iwae) trained for a fixed time: stopped by SIGINT, which vaelab
#                takes as Ctrl-C (finishes the step, saves a checkpoint), so no step count must be guessed
#   preset_eval  vaelab evaluate --samples 5000 on the whole test set: its NLL, and the IS-NLL throughput
#   nll_speed    nll_speed.py on that run: the fast scoring against the plain one (torch's own formulas)
#   burda_train, burda_eval; vampprior_train, vampprior_eval; vampprior10_train, vampprior10_eval
#                the long presets (mnist-burda-vae, mnist-vampprior, and mnist-vampprior-10min: the
#                recipe of the NLL-against-minutes curve, ELU units and 200 pseudo-inputs) trained
#                for a fixed number of minutes through their own train.time_budget (so they finish
#                as on a laptop: warm-up + cosine fitted to the minutes, EMA weights kept, summary.json),
#                then vaelab evaluate --samples 5000 on the whole test set
# then gpu_summary.py writes $OUT/gpu.json from what the sections left, and if even that fails, a
# shell fallback writes a JSON of the sections' exit statuses: the JSON is always there.
#
# The GPU machine has no network: MNIST travels as .gpu-data/mnist.npz (write it with
# `PYTHONPATH=src python benchmarks/gpu_data.py`; it is git-ignored, so the caller carries it),
# read through $VAELAB_DATA. vaelab runs from src/ through PYTHONPATH and `python -m vaelab`:
# nothing is installed there (an editable install would need setuptools and may find no index).
#
# Settings (environment): OUT (default ./gpu-results), GPU_TOTAL_SECONDS (470), GPU_SECTIONS (see
# above), GPU_PRESET (mnist-iwae), GPU_TRAIN_SECONDS (180: the preset's training, shortened if the
# sections before it ran long), GPU_LONG_MINUTES (3: each long preset's train.time_budget, shortened
# so that every long preset selected, and its scoring, fits what the budget leaves), GPU_LONG_SETS
# (extra config overrides for the long presets, KEY=VALUE separated by spaces, e.g.
# "train.validate_every=5"), VAELAB_DATA (default .gpu-data when it exists).
set -u

cd "$(dirname "$0")/.." || exit 1
DRY=${VAELAB_GPU_DRY:-0}
for arg in "$@"; do
    case $arg in
        --dry-run) DRY=1 ;;
        -h|--help) sed -n '2,39p' "$0"; exit 0 ;;
        *) echo "gpu.sh: unknown argument $arg (try --help)" >&2; exit 2 ;;
    esac
done

OUT=${OUT:-./gpu-results}
mkdir -p "$OUT" || exit 1
OUT=$(cd "$OUT" && pwd)
: > "$OUT/sections.tsv"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1  # progress lines appear as they happen, through tee
if [ -z "${VAELAB_DATA:-}" ] && [ -f .gpu-data/mnist.npz ]; then
    export VAELAB_DATA="$PWD/.gpu-data"
fi
PY=${PYTHON:-python}
TOTAL=${GPU_TOTAL_SECONDS:-470}
PRESET=${GPU_PRESET:-mnist-iwae}
TRAIN_SECONDS=${GPU_TRAIN_SECONDS:-180}
LONG_MINUTES=${GPU_LONG_MINUTES:-3}
GPU_LONG_SETS=${GPU_LONG_SETS:-}
read -r -a LONG_SETS <<< "$GPU_LONG_SETS"
RESERVE=10  # kept back for the summary, which every run must reach
# What a long preset is expected to take besides its budget, kept back when its minutes are planned
# (its sections' limits are twice and three times these, less if the budget is short):
LONG_START=30  # starting, loading MNIST, the test ELBO at the end
LONG_EVAL=45   # its K = 5000 scoring
LONG_MIN=60    # the least training a long preset selected keeps from the sections before it
RUN="$OUT/runs/preset"
START=$SECONDS
# Every section GPU_SECTIONS may name, in the order they run; the long presets, section:preset.
ALL_SECTIONS="env speed_eager speed_compiled preset burda vampprior vampprior10"
LONG_PRESETS="burda:mnist-burda-vae vampprior:mnist-vampprior vampprior10:mnist-vampprior-10min"

if [ "$DRY" = 1 ]; then
    # Every section on the CPU, on sizes that take seconds: the plumbing, not the numbers.
    DEVICE=cpu
    TRAIN_SECONDS=${GPU_TRAIN_SECONDS:-25}  # a busy 2-core machine takes 15 s to start training
    SPEED_EAGER=(--device cpu --eager --images 1024 --epochs 1 --rounds 1)
    SPEED_COMPILED=(--device cpu --compile --compile-mode reduce-overhead --images 1024 --epochs 1 --rounds 1)
    # Batches of 50 over 500 images, 5 importance samples: epochs of 10 cheap steps, so some end
    # (and leave metrics) in the time left.
    PRESET_SETS=(--set train.device=cpu --set train.compile=false --set train.train_subset=500
                 --set train.batch_size=50 --set objective.samples=5 --set data.val_size=200 --set train.epochs=1000)
    EVAL_SPLIT=val  # the 200 validation images: the whole test set would take a CPU most of a minute
    EVAL_K=10
    NLL_ARGS=(--device cpu --images 4 --samples 50 --repeats 1)
    SECTIONS=${GPU_SECTIONS:-$ALL_SECTIONS}
    LONG_MINUTES=${GPU_LONG_MINUTES:-0.1}
    LONG_START=45 LONG_EVAL=30 LONG_MIN=6
    # The long presets' own networks on 500 images, validated on 200; a few seconds of budget each.
    LONG_DEVICE_SETS=(--set train.device=cpu --set train.compile=false --set train.train_subset=500
                      --set train.batch_size=50 --set data.val_size=200)
else
    DEVICE=cuda
    SPEED_EAGER=(--device cuda --eager --epochs 2 --rounds 1)
    SPEED_COMPILED=(--device cuda --compile --compile-mode reduce-overhead --epochs 2 --rounds 2)
    # Epochs far past the time budget: the clock stops the run, not the count (3280: Burda et al.'s schedule).
    PRESET_SETS=(--set train.device=cuda --set train.compile=true --set train.compile_mode='"reduce-overhead"'
                 --set train.epochs=3280)
    EVAL_SPLIT=test
    EVAL_K=5000
    NLL_ARGS=(--device cuda --images 100 --samples 5000 --repeats 2)
    SECTIONS=${GPU_SECTIONS:-env speed_eager speed_compiled preset}
    # The presets as shipped (batch 500, EMA, warm-up + cosine), on the GPU, uncompiled: "auto" compiles on a CPU only.
    LONG_DEVICE_SETS=(--set train.device=cuda)
fi
printf '%s\n' "$SECTIONS" > "$OUT/selected_sections.txt"

# wanted NAME: whether GPU_SECTIONS selects NAME.
wanted() { case " $SECTIONS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

say() { printf '[gpu.sh %4ds] %s\n' $((SECONDS - START)) "$*"; }

# section NAME CAP SIGNAL CMD...: run CMD under timeout (CAP seconds, less if the budget is short),
# its output shown and kept in $OUT/NAME.log; records NAME, exit status, seconds, limit.
section() {
    local name=$1 cap=$2 signal=$3
    shift 3
    local left=$((TOTAL - (SECONDS - START) - RESERVE))
    local limit=$((cap < left ? cap : left))
    if [ "$limit" -lt 5 ]; then
        say "$name: skipped, the budget is spent"
        printf '%s\tskipped\t0\t0\n' "$name" >> "$OUT/sections.tsv"
        return 1
    fi
    say "$name: start (limit ${limit} s)"
    local began=$SECONDS
    timeout -s "$signal" -k 20 "$limit" "$@" > >(tee "$OUT/$name.log") 2>&1
    local rc=$?
    printf '%s\t%s\t%s\t%s\n' "$name" "$rc" $((SECONDS - began)) "$limit" >> "$OUT/sections.tsv"
    say "$name: exit $rc after $((SECONDS - began)) s"
    return "$rc"
}

for name in $SECTIONS; do
    case " $ALL_SECTIONS " in
        *" $name "*) ;;
        *) echo "gpu.sh: unknown section $name in GPU_SECTIONS ($ALL_SECTIONS)" >&2
           exit 2 ;;
    esac
done

# A script of its own (bash -c), since timeout runs programs, not shell functions.
wanted env && section env 45 TERM bash -c 'if command -v nvidia-smi > /dev/null; then nvidia-smi || true
    else echo "no nvidia-smi on this machine"; fi
    "$0" benchmarks/gpu_summary.py env "$1"' "$PY" "$OUT"

wanted speed_eager && section speed_eager 75 TERM "$PY" benchmarks/train_speed.py "${SPEED_EAGER[@]}" \
    --json "$OUT/train_speed_eager.json"

wanted speed_compiled && section speed_compiled 120 TERM "$PY" benchmarks/train_speed.py "${SPEED_COMPILED[@]}" \
    --json "$OUT/train_speed_compiled.json"

# long_preset NAME PRESET SECONDS: train PRESET for SECONDS through its own train.time_budget, then
# score it with K = 5000 on the test set (a dry run: K = 10 on 200 validation images). The run is
# in $OUT/runs/NAME; NAME_plan.json says what was asked and given.
long_preset() {
    local name=$1 preset=$2 seconds=$3 run="$OUT/runs/$1" sets=() item minutes
    printf '{"preset": "%s", "minutes_asked": %s, "train_seconds_budget": %s, "device": "%s", "sets": "%s"}\n' \
        "$preset" "$LONG_MINUTES" "$seconds" "$DEVICE" "${GPU_LONG_SETS//\"/\\\"}" > "$OUT/${name}_plan.json"
    rm -rf "$run"
    if [ "$seconds" -lt 5 ]; then
        say "${name}_train, ${name}_eval: skipped, the budget is spent"
        printf '%s_train\tskipped\t0\t0\n%s_eval\tskipped\t0\t0\n' "$name" "$name" >> "$OUT/sections.tsv"
        return
    fi
    minutes=$(awk -v s="$seconds" 'BEGIN { printf "%.4f", s / 60 }')
    for item in ${LONG_SETS[@]+"${LONG_SETS[@]}"}; do sets+=(--set "$item"); done
    # Stopped by its own budget; SIGINT (a checkpoint, the best weights so far) only if start-up ran long.
    section "${name}_train" $((seconds + 2 * LONG_START)) INT "$PY" -m vaelab train --preset "$preset" \
        --out "$run" "${LONG_DEVICE_SETS[@]}" --set "train.time_budget=$minutes" --set evaluate.samples=0 \
        --set 'figures.names=[]' ${sets[@]+"${sets[@]}"}
    if [ -d "$run" ]; then
        section "${name}_eval" $((3 * LONG_EVAL)) TERM bash -c '"$0" -m vaelab evaluate "$1" --samples "$2" \
            --device "$3" --split "$5" --json > "$4.tmp" && mv "$4.tmp" "$4"' \
            "$PY" "$run" "$EVAL_K" "$DEVICE" "$OUT/${name}_eval.json" "$EVAL_SPLIT"
    else
        say "${name}_eval: skipped, no run to score"
        printf '%s_eval\tskipped\t0\t0\n' "$name" >> "$OUT/sections.tsv"
    fi
}
LONG=()
for pair in $LONG_PRESETS; do
    wanted "${pair%%:*}" && LONG+=("${pair%%:*} ${pair#*:}")
done
# What the long presets selected need kept back while the sections before them run.
LONG_NEED=$((${#LONG[@]} * (LONG_START + LONG_EVAL + LONG_MIN)))

if wanted preset; then
    # The preset's training takes what the budget leaves after the evaluation and nll_speed (75 + 60 s)
    # and what the long presets selected need (each a minute of training at least).
    left=$((TOTAL - (SECONDS - START) - RESERVE - 135 - LONG_NEED))
    train_limit=$((TRAIN_SECONDS < left ? TRAIN_SECONDS : left))
    printf '{"preset": "%s", "train_seconds_asked": %s, "train_seconds_limit": %s, "device": "%s"}\n' \
        "$PRESET" "$TRAIN_SECONDS" "$train_limit" "$DEVICE" > "$OUT/preset_plan.json"
    rm -rf "$RUN"
    # SIGINT, not TERM: vaelab finishes the step, saves a checkpoint and exits; status 124 is the
    # clock stopping it, as planned. Figures and the in-run evaluation are off: the next section scores it.
    if [ "$train_limit" -ge 5 ]; then
        section preset_train "$train_limit" INT "$PY" -m vaelab train --preset "$PRESET" --out "$RUN" \
            "${PRESET_SETS[@]}" --set evaluate.samples=0 --set 'figures.names=[]'
    else
        say "preset_train: skipped, the budget is spent"
        printf 'preset_train\tskipped\t0\t0\n' >> "$OUT/sections.tsv"
    fi

    if [ -d "$RUN" ]; then
        # --json: stdout is one JSON object; the log goes to stderr, kept beside it.
        section preset_eval 75 TERM bash -c '"$0" -m vaelab evaluate "$1" --samples "$2" --device "$3" --split "$5" \
            --json > "$4/preset_eval.json.tmp" && mv "$4/preset_eval.json.tmp" "$4/preset_eval.json"' \
            "$PY" "$RUN" "$EVAL_K" "$DEVICE" "$OUT" "$EVAL_SPLIT"
        section nll_speed 60 TERM "$PY" benchmarks/nll_speed.py --run "$RUN" "${NLL_ARGS[@]}" \
            --json "$OUT/nll_speed.json"
    else
        say "preset_eval, nll_speed: skipped, no preset run to score"
        printf 'preset_eval\tskipped\t0\t0\nnll_speed\tskipped\t0\t0\n' >> "$OUT/sections.tsv"
    fi
fi

if [ ${#LONG[@]} -gt 0 ]; then
    # The same minutes for each: GPU_LONG_MINUTES, or the budget's share after everyone's start-up and scoring.
    left=$((TOTAL - (SECONDS - START) - RESERVE))
    share=$(((left - ${#LONG[@]} * (LONG_START + LONG_EVAL)) / ${#LONG[@]}))
    long_seconds=$(awk -v m="$LONG_MINUTES" -v s="$share" 'BEGIN { t = int(m * 60); print (t < s ? t : s) }')
    for entry in "${LONG[@]}"; do
        read -r name preset <<< "$entry"
        long_preset "$name" "$preset" "$long_seconds"
    done
fi

summary_flags=()
[ "$DRY" = 1 ] && summary_flags=(--dry-run)
# (the ${a[@]+...} form: an empty array is an unbound variable to set -u in bash before 4.4)
if ! timeout 60 "$PY" benchmarks/gpu_summary.py summary "$OUT" ${summary_flags[@]+"${summary_flags[@]}"}; then
    # The summary itself failed (no Python that runs?): a JSON of the statuses, written by the shell alone.
    {
        dry_json=false
        [ "$DRY" = 1 ] && dry_json=true
        printf '{"schema": 1, "dry_run": %s, "summary_failed": true, "sections": {' "$dry_json"
        sep=""
        while IFS=$'\t' read -r name rc seconds limit; do
            printf '%s"%s": {"rc": "%s", "seconds": %s, "limit_s": %s}' "$sep" "$name" "$rc" "$seconds" "$limit"
            sep=", "
        done < "$OUT/sections.tsv"
        printf '}}\n'
    } > "$OUT/gpu.json"
fi
say "done: $OUT/gpu.json"
