#!/usr/bin/env bash
# Every GPU check of funcrl in one command, for a short lease of a CUDA machine.
#
#   bash bench/gpu_lease.sh [deadline_s]        # results and logs in $OUT (default /tmp/gpu_out)
#
# The machine runs its own torch, so the packages funcrl and the references need beyond it
# travel as wheels in .whl/ (optree, gymnasium, torchrl and tensordict for that torch; gymnax,
# distrax and tfp-nightly for PureJaxRL).
# What runs, in one call of about four minutes:
#   * in the background from the start: bench/pure.py --device cuda with 1,024 seeds (PPO,
#     CartPole-v1, 5e5 steps per seed), which prints its progress with wall-clock times, and
#     the CUDA tests (tests/ -k cuda: every objective's compiled step under sync-debug "error",
#     buffers, pure envs, pure PPO/DQN training against CPU, funcrl.jit with CUDA graphs,
#     funcrl.random on CUDA);
#   * in the foreground: bench/update_step.py on CUDA, SAC standard first (funcrl.jit + CUDA
#     graphs, compiled "reduce-overhead", TorchRL compiled, the floor), then TD3 and DQN while
#     time is left. Each prints the wall-clock bounds of its timed phase, to check for overlap.
# Each stage runs under what is left of the deadline; a failing one does not stop the next.
set -u
START=$(date +%s)
DEADLINE=${1:-200}
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
left() { echo $((DEADLINE - ($(date +%s) - START))); }
stage() {  # stage NAME LOG CAP_S CMD...: CMD under min(CAP_S, time left), appended to $OUT/LOG
    local name=$1 log=$OUT/$2 cap=$3
    shift 3
    local t
    t=$(left)
    [ "$cap" -lt "$t" ] && t=$cap
    if [ "$t" -lt 20 ]; then
        echo "== $name: skipped, ${t}s left"
        return
    fi
    echo "== $name (cap ${t}s) at $(( $(date +%s) - START ))s"
    echo "== $name" >>"$log"
    timeout --kill-after=5 "$t" "$@" >>"$log" 2>&1
    echo "== $name: rc $? after $(( $(date +%s) - START ))s"
    tail -n 25 "$log"
}

if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD
else
    export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv
python3 -c "import torch, funcrl, torchrl, tensordict, optree, gymnasium; print('torch', torch.__version__, torch.version.cuda, torch.cuda.get_device_name(), '| torchrl', torchrl.__version__, '| tensordict', tensordict.__version__)"

# The 1,024-seed pure run compiles for minutes: it starts at once, in the background, and
# prints its progress with wall-clock times; the tests start beside it. The update-step table
# prints the wall-clock bounds of its timed phase, so any overlap with the pure run's training
# shows in the logs.
python3 bench/pure.py --device cuda --seeds 1024 --skip purejaxrl sb3 \
    --out "$OUT" --name pure_gpu >"$OUT/pure.log" 2>&1 &
PURE=$!
T="python3 -m pytest -q -p no:cacheprovider -rfEs"
timeout 150 env TORCHINDUCTOR_COMPILE_THREADS=2 $T -n 6 tests/ -k "cuda or CUDA" >"$OUT/tests.log" 2>&1 &
TESTS=$!
stage update_sac_standard update.log 150 python3 bench/update_step.py --device cuda \
    --cudagraphs --algos sac --sizes standard --rounds 5 --steps 200 --no-explain --no-memory \
    --out "$OUT" --name update_step_gpu
wait $TESTS
echo "== tests: rc $? after $(( $(date +%s) - START ))s"
grep -E "passed|failed|^FAILED|^ERROR" "$OUT/tests.log" | tail -30
for row in "td3 standard" "dqn standard"; do
    set -- $row
    stage "update_$1_$2" update.log 100 python3 bench/update_step.py --device cuda --cudagraphs \
        --algos "$1" --sizes "$2" --rounds 5 --steps 200 --no-explain --no-memory \
        --out "$OUT" --name update_step_gpu
done
t=$(left)
[ "$t" -gt 0 ] && timeout "$t" tail --pid=$PURE -f /dev/null
kill $PURE 2>/dev/null
echo "== pure (unix now $(date +%s)):"
grep -vE "Warning|warn" "$OUT/pure.log" | tail -15
echo "== done at $(( $(date +%s) - START ))s"
python3 -c "
import json, sys
sys.path.insert(0, 'bench')
import update_step
p = json.load(open('$OUT/update_step_gpu.json'))
print(update_step.table(p['runs']))
" 2>&1 | tail -30
