#!/usr/bin/env bash
# One call on a GPU machine: tests on CUDA, a real NCCL job, speed (each path, CUDA graphs,
# torch.compile), the paper's image setting at full size, peak memory; all of it in
# benchmarks/results/gpu.md (and in $OUT, when set).
#
#   bash benchmarks/gpu_check.sh --prepare   # beforehand, where pip reaches a registry: the
#                                            # dependencies the GPU machine lacks, as wheels for
#                                            # CPython 3.12 manylinux x86_64, into .wheels/
#   bash benchmarks/gpu_check.sh             # on the GPU machine (no network; ~6 minutes)
#   DISTLG_COMMIT=abc1234 bash benchmarks/gpu_check.sh   # where the copy has no .git
#
# The GPU machine is assumed to have a CUDA build of torch, accelerate, safetensors,
# scikit-image, pytest, Triton and numpy; .wheels/ adds zarr,
# numcodecs, donfig, google-crc32c and av (installed with pip --no-index into /tmp/site).
# distlg itself runs from this checkout (PYTHONPATH), no install. Every part runs under its own
# time limit in its own process: one failing or slow part does not stop the others, and gpu.md
# is written whatever happens. Without a GPU every device part says "no GPU: skipped" and
# results/gpu.md is left as it is (the report goes to the work folder and $OUT only).
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PY=${PYTHON:-python3}
WHEELS=(zarr==3.1.6 numcodecs==0.16.6 donfig==0.8.1.post1 google-crc32c==1.9.0 av==18.1.0)

if [ "${1:-}" = "--prepare" ]; then
    rm -rf .wheels && mkdir -p .wheels
    for spec in "${WHEELS[@]}"; do
        $PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
            --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
            --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
            --platform manylinux1_x86_64 -d .wheels "$spec" || { echo "could not fetch $spec"; exit 1; }
    done
    ls -l .wheels
    echo ".wheels: $(du -sm .wheels | cut -f1) MiB (carry it: the working tree and carried paths travel within 64 MiB)"
    exit 0
fi

START=$(date +%s)
WORK=${GPU_CHECK_WORK:-/tmp/distlg-gpu-check}
rm -rf "$WORK" && mkdir -p "$WORK/parts"
LOG=$WORK/logs && mkdir -p "$LOG"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
elapsed() { echo $(( $(date +%s) - START )); }
say() { echo "[gpu_check $(elapsed)s] $*"; }

# -- set-up: wheels, import path ------------------------------------------------------------------
if ls .wheels/*.whl >/dev/null 2>&1 && ! $PY -c "import zarr, numcodecs, av" 2>/dev/null; then
    say "installing $(ls .wheels/*.whl | wc -l) wheels from .wheels into /tmp/site"
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .wheels/*.whl > "$LOG/setup.log" 2>&1 || say "wheel install failed (see setup.log)"
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
$PY -c "import distlg, zarr, numcodecs; print('distlg from', distlg.__file__)" >> "$LOG/setup.log" 2>&1 \
    || say "warning: distlg or zarr does not import (see setup.log)"
NGPU=$($PY -c "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)" 2>/dev/null || echo 0)
say "$NGPU GPU(s); work folder $WORK"

STATUS=()   # "part|limit|seconds|result"
# run PART LIMIT CMD...: the command under `timeout`, output to logs/PART.log
run() {
    local part=$1 limit=$2; shift 2
    local t0=$(date +%s) rc
    say "$part: start (limit ${limit}s)"
    timeout -k 10 "$limit" "$@" > "$LOG/$part.log" 2>&1
    rc=$?
    local took=$(( $(date +%s) - t0 )) result
    case $rc in 0) result=ok ;; 124|137) result="stopped at its ${limit}s limit" ;; *) result="failed (exit $rc)" ;; esac
    STATUS+=("$part|$limit|$took|$result")
    say "$part: $result after ${took}s"
    tail -n 3 "$LOG/$part.log" | sed 's/^/    /'
    return 0
}
skip() { STATUS+=("$1|-|0|no GPU: skipped"); say "$1: no GPU: skipped"; }

if [ "$NGPU" -gt 0 ]; then
    # (a) the device tests on CUDA (the step on each device, CUDA graphs, the Triton kernel)
    run env 15 $PY benchmarks/gpu_bench.py env "$WORK/parts/env.md"
    run tests-gpu 60 $PY -m pytest -q -p no:cacheprovider -m "device" tests
    # (b) a real NCCL job: train + evaluate + checkpoint, resume (also with --cuda-graph), export, render
    run nccl 70 bash -c "
        set -ex
        R=$WORK/nccl; L='$PY -m accelerate.commands.launch --config_file launch/multi-gpu.yaml --num_processes $NGPU'
        A='--signal builtin:camera@256x256 --factors 8 8 --params 20000 --samples-per-partition 512 --eval-every 100 --checkpoint-every 100 --no-tensorboard --no-progress --out '\$R
        \$L -m distlg train \$A --steps 200
        ls \$R/checkpoints
        \$L -m distlg train \$A --steps 300 --resume
        \$L -m distlg train \$A --steps 400 --resume --cuda-graph
        grep -c loss \$R/history.jsonl
        $PY -m distlg export --no-progress \$R \$R/exported
        $PY -m distlg info \$R/exported
        $PY -m distlg render \$R/exported --out \$R/render.png --compare builtin:camera@256x256 --device cuda --no-progress"
    # (c) speed at the paper's video widths, each path, each precision
    run speed 120 $PY benchmarks/speed.py 5 --device cuda --precisions fp32 tf32 bf16 \
        --samples 200 2000 --markdown "$WORK/parts/speed.md"
    # (d) the paper's image setting at full size; (e) peak memory
    run image 150 $PY benchmarks/gpu_bench.py image "$WORK/parts/image.md"
    run memory 20 $PY benchmarks/gpu_bench.py memory "$WORK/parts/memory.md"
    # (c, continued) torch.compile of distlg's autograd formulation beside the fused step and
    # the graphed step, tf32 at 640 K samples per step (compiling takes tens of seconds).
    # The CPU suite (the 2-worker gloo suite among it) is CI's: it needs no GPU machine.
    run compile 120 $PY benchmarks/speed.py 5 --device cuda --precisions tf32 --samples 2000 \
        --compile --only "distlg" --markdown "$WORK/parts/compile.md"
else
    for part in tests-gpu nccl speed image memory compile; do skip $part; done
fi

# -- the report -----------------------------------------------------------------------------------
REPORT=$WORK/gpu.md
{
    echo "# GPU check"
    echo
    echo "- command: \`bash benchmarks/gpu_check.sh\`"
    COMMIT=${DISTLG_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo "unknown (no .git here: set DISTLG_COMMIT)")}
    if [ -n "${DISTLG_COMMIT:-}" ]; then echo "- commit: $COMMIT"; else
        echo "- commit: $COMMIT$(git status --porcelain --untracked-files=no 2>/dev/null | grep -q . && echo ' (with uncommitted changes)')"; fi
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); total $(elapsed) s"
    echo "- machine: $(uname -m), $(nproc) cores, $NGPU GPU(s)"
    if [ -s "$WORK/parts/env.md" ]; then cat "$WORK/parts/env.md"; else
        echo "- torch: $($PY -c 'import torch; print(torch.__version__, "CUDA", torch.version.cuda)' 2>&1 | tail -1)"; fi
    echo
    echo "| part | limit s | took s | result |"
    echo "|---|---|---|---|"
    for s in "${STATUS[@]}"; do IFS='|' read -r p l t r <<< "$s"; echo "| $p | $l | $t | $r |"; done
    section() {  # section TITLE PART [LOG]
        echo; echo "## $1"; echo
        if [ -s "$WORK/parts/$2.md" ]; then cat "$WORK/parts/$2.md"; fi
        if [ -n "${3:-}" ] && [ -f "$LOG/$3.log" ]; then
            echo; echo '```'; grep -E "passed|failed|error|Error|PSNR|trained|resuming|skipped" "$LOG/$3.log" | tail -n 15; echo '```'; fi
    }
    section "(a) tests: the device tests on CUDA (the CPU suite runs in CI)" none tests-gpu
    section "(b) NCCL job: accelerate launch, launch/multi-gpu.yaml, $NGPU process(es): train, evaluate, checkpoint, resume, export, render" none nccl
    section "(c) training throughput at the paper's video widths (320 partitions, 55 local / 180 global)" speed speed
    section "(c') torch.compile of the autograd formulation, tf32, 640 K samples per step" compile compile
    section "(d) the paper's image setting at full size (astronaut 512x512, ~200 K weights, (16, 16), 2000 steps)" image image
    section "(e) peak GPU memory of one training step (video widths)" memory memory
} > "$REPORT"
if [ "$NGPU" -gt 0 ]; then
    mkdir -p benchmarks/results && cp "$REPORT" benchmarks/results/gpu.md && say "wrote benchmarks/results/gpu.md"
else
    say "no GPU: benchmarks/results/gpu.md left as it is; report in $REPORT"
fi
if [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT/logs"
    cp "$REPORT" "$OUT/gpu.md"
    for f in tests-gpu nccl speed image memory compile; do
        [ -f "$LOG/$f.log" ] && tail -c 2000000 "$LOG/$f.log" > "$OUT/logs/$f.log"
    done
    say "copied gpu.md and logs to \$OUT"
fi
say "done"
