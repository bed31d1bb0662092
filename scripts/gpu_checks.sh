#!/usr/bin/env bash
# The GPU checks of one session, in priority order, each under its own time limit, on a machine with one NVIDIA
# GPU and JAX's CUDA plugin (the package need not be installed: it runs from this checkout).
#
#     bash scripts/gpu_checks.sh [LOGDIR [GROUP]]   # logs and a summary under LOGDIR (default $OUT, else gpu_logs)
# (Not here: `ncu` ended in a segmentation fault at the start of every JAX process on the H100, and XLA's dump
# (--xla_dump_to) held no PTX of the Triton kernel to read registers from.)
#
# GROUP checks (the default):
# 1. scripts/device_check.py: the GPU against the host CPU, same seed (float64 and float32 paths, float64 gradient)
# 2. bench, forward only, 10^7 paths in one chunk (the 10^10 path-steps/s target)
# 3. run, 10^8 paths over one year (chunked), wall time and peak host memory
# 4. bench with the gradient, 2^20 paths (the gradient over the forward on a GPU)
# 5. on a machine with several GPUs: bench --devices all, 2^22 paths a GPU (the forward sharded, the gradient's
#    chunks one a GPU)
# GROUP tune:
# 1. the gradient of 2^20 paths in chunks of 2^18, 2^19 and 2^20 (the default on an 80 GB GPU: 2^20)
# 2. scripts/profile_run.py --grad at 2^18 paths: the gradient's time by block and phase on the GPU
# GROUP cache: JAX's persistent compilation cache on the GPU (`_compile_cache`): `run` and then `sensitivities`,
# each twice with one fresh cache folder; the second process should load the programs the first compiled (compare
# first_chunk_s, the compile and the first chunk, and forward_s). CACHE_PATHS paths (default 2^22; small on a CPU).
# GROUP ab (BASE=another checkout, e.g. copied into an ignored folder and carried): the forward and the gradient of
# 2^20 paths in one chunk there, then here, on the same machine. (`python -m` puts the working directory first on
# sys.path, so each side runs from its own tree.)
set -u
cd "$(dirname "$0")/.."
LOG=${1:-${OUT:-gpu_logs}}
GROUP=${2:-checks}
mkdir -p "$LOG"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
SUMMARY="$LOG/summary.txt"
: >"$SUMMARY"

step() {  # step NAME SECONDS COMMAND...: run under a limit, log, record the exit status and the wall time
    local name=$1 limit=$2
    shift 2
    local t0=$SECONDS
    echo "== $name (limit ${limit}s): $*"
    timeout --kill-after=5 "$limit" "$@" >"$LOG/$name.log" 2>&1
    local rc=$?
    echo "$name rc=$rc wall=$((SECONDS - t0))s" | tee -a "$SUMMARY"
    tail -n "${TAIL:-25}" "$LOG/$name.log"
}

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv | tee -a "$SUMMARY"
$PY -c "import jax, jaxlib; print('jax', jax.__version__, jax.devices())" 2>&1 | tail -n 1 | tee -a "$SUMMARY"

if [ "$GROUP" = checks ]; then
    step device_check 200 $PY scripts/device_check.py --paths 16384
    step bench_forward_1e7 90 $PY -m jaxstress bench april_2025 --paths 10000128 --chunk-size 10000128 --no-grad --json
    TAIL=6 step run_1e8 170 $PY -c "import resource, subprocess, sys
r = subprocess.run([sys.executable, '-m', 'jaxstress', 'run', 'april_2025', '--paths', '100000000', '--no-plots',
                    '--out', '/tmp/run_1e8'])
print('max RSS of the run: %.2f GiB' % (resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20))
sys.exit(r.returncode)"
    step bench_grad_2e20 120 $PY -m jaxstress bench april_2025 --paths 1048576 --repeats 2 --json
    n_gpu=$(nvidia-smi --list-gpus | wc -l)
    if [ "$n_gpu" -gt 1 ]; then  # a node of several GPUs: the forward and the gradient over all of them
        step bench_devices 180 $PY -m jaxstress bench april_2025 --paths $((n_gpu * 4194304)) --devices all \
            --repeats 2 --json
    fi
elif [ "$GROUP" = tune ]; then
    for c in 262144 524288 1048576; do
        step "bench_grad_chunk_$c" 100 $PY -m jaxstress bench april_2025 --paths 1048576 --grad-chunk-size $c \
            --repeats 2 --json
    done
    TAIL=70 step profile_grad 150 env XLA_FLAGS=--xla_gpu_enable_command_buffer= \
        $PY scripts/profile_run.py --grad --paths 262144 --top 20
elif [ "$GROUP" = cache ]; then
    export JAXSTRESS_CACHE_DIR="$LOG/xla_cache"
    rm -rf "$JAXSTRESS_CACHE_DIR"
    n=${CACHE_PATHS:-4194304}
    for i in 1 2; do
        TAIL=3 step "run_cache_$i" 120 $PY -m jaxstress run april_2025 --paths "$n" --no-plots --out "$LOG/run_cache_$i"
        $PY -c "import json, sys; d = json.load(open(sys.argv[1])); print('first_chunk_s', d['first_chunk_s'],
'wall_time_s', d['wall_time_s'])" "$LOG/run_cache_$i/summary.json" 2>&1 | tee -a "$SUMMARY"
    done
    for i in 1 2; do
        TAIL=3 step "sensitivities_cache_$i" 150 $PY -m jaxstress sensitivities april_2025 --paths "$n" \
            --out "$LOG/sens_cache_$i"
        $PY -c "import json, sys; d = json.load(open(sys.argv[1])); print('forward_s', d['forward_s'],
'gradient_s', d['gradient_s'])" "$LOG/sens_cache_$i/sensitivities.json" 2>&1 | tee -a "$SUMMARY"
    done
    du -sh "$JAXSTRESS_CACHE_DIR" | tee -a "$SUMMARY"
elif [ "$GROUP" = ab ]; then
    for tree in "${BASE:?set BASE to the baseline checkout}" "$PWD"; do
        step "bench_grad_$(basename "$tree")" 100 bash -c "cd '$tree' && PYTHONPATH='$tree' $PY -m jaxstress bench \
            april_2025 --paths 1048576 --grad-chunk-size 1048576 --repeats 2 --json"
    done
else
    echo "unknown group $GROUP (checks, tune, cache, ab)"
    exit 2
fi
echo "== summary"
cat "$SUMMARY"
