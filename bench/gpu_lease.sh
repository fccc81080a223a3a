#!/usr/bin/env bash
# Every GPU check of funcrl in one command, for a short lease of a CUDA machine.
#
#   bash bench/gpu_lease.sh [deadline_s]        # results and logs in $OUT (default /tmp/gpu_out)
#   STAGES="update_td3 update_dqn" bash bench/gpu_lease.sh 240   # only stages with these prefixes
#
# Stage names: td3_trace, tests, examples, update_sac_standard, pure_1024, purejaxrl_1024,
# update_{td3,dqn}_standard, update_{sac,td3,dqn}_small. A 15-minute lease fits one full call (deadline ~560 s) and a second,
# made while the machine is still warm, for the stages the first did not reach.
#
# The machine runs its own torch (2.11 + CUDA 13, Python 3.12), so the packages funcrl and the
# references need beyond it travel as wheels in .whl/ (git-ignored; pass carry=[".whl"]):
#
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
#       --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
#       optree==0.20.0 gymnasium==1.3.0 farama-notifications pyvers==0.2.3 orjson \
#       importlib_metadata torchrl==0.12.0 tensordict==0.12.4 \
#       gymnax==1.0.1 distrax==0.1.9 tfp-nightly==0.26.0.dev20261027 decorator gast dm-tree
#
# What runs, in order, one stage at a time (nothing else runs while a stage times), each under
# min(its cap, what is left of the deadline); a failing stage does not stop the next:
#   0. TD3's compiled step alone, with dynamo's verbose errors (it failed on the last lease);
#   1. the CUDA tests (tests/ -k cuda: every objective's compiled step under sync-debug "error",
#      buffers, pure envs, pure PPO/DQN training against CPU, funcrl.jit with CUDA graphs,
#      funcrl.random on CUDA), verbose, so a log cut short still names each finished test; beside
#      them, not timed, 2. the examples' CUDA paths, briefly (SAC with --cudagraphs, PPO on a
#      pure env, 4 seeds);
#   3. bench/update_step.py on CUDA, SAC standard (funcrl.jit + CUDA graphs, compiled
#      "reduce-overhead", TorchRL compiled in CUDA graphs, the floor);
#   4. bench/pure.py --device cuda with 1,024 seeds (PPO, CartPole-v1, 5e5 steps per seed),
#      printing its progress with wall-clock times, then PureJaxRL's run on the same GPU
#      (measured at a5816c4: funcrl 12.4M env-steps/s, PureJaxRL 36.5M);
#   5. the other update-step rows while time is left.
# Measured on an H200 lease (torch 2.11): the machine starts in ~35 s; TorchRL's compiled SAC
# step takes ~65 s to compile there, its TD3 step ~35 s.
set -u
START=$(date +%s)
DEADLINE=${1:-560}
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
left() { echo $((DEADLINE - ($(date +%s) - START))); }
want() {  # $STAGES (space-separated name prefixes) selects stages; unset runs them all
    [ -z "${STAGES:-}" ] && return 0
    local s
    for s in $STAGES; do
        case "$1" in "$s"*) return 0 ;; esac
    done
    return 1
}
stage() {  # stage NAME LOG CAP_S CMD...: CMD under min(CAP_S, time left), appended to $OUT/LOG
    local name=$1 log=$OUT/$2 cap=$3
    shift 3
    if ! want "$name"; then
        echo "== $name: not selected"
        return
    fi
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

# TD3's compiled step failed on the last lease with a bare InductorError: AssertionError (torch
# 2.11; it compiles on a CPU and under a faked CUDA device with torch 2.13). Its full internal
# stack first, alone, so the log names the assert's file and line.
# Then TD3's parts compiled alone (target smoothing, the loss with and without its noise draw,
# the critic's gradient): which of them fail says where the assert lives.
stage td3_trace tests.log 120 env TORCHDYNAMO_VERBOSE=1 python3 -m pytest -p no:cacheprovider \
    -v --tb=long "tests/test_devices.py::test_compiled_step_runs_on_device_without_host_sync[td3-cuda]" \
    tests/test_devices.py::test_td3_parts_compile_on_cuda
grep -n -B2 -A12 "AssertionError" "$OUT/tests.log" 2>/dev/null | tail -60
# The examples' CUDA paths end to end, briefly (SAC with a CUDA-graphed compiled step, PPO on a
# pure env with 4 seeds), beside the tests: both check correctness, not speed, and the lease is short.
stage examples examples.log 170 bash -c "python3 examples/sac.py --device cuda --cudagraphs \
    --total-steps 2000 --learning-starts 500 --eval-every 0 --eval-episodes 2 --no-progress \
    --out /tmp/ex_sac --overwrite && python3 examples/ppo_pure.py --device cuda --seeds 4 \
    --total-steps 8192 --no-progress --out /tmp/ex_ppo --overwrite" &
stage tests tests.log 170 python3 -m pytest -v -p no:cacheprovider -rfE -n 8 tests/ \
    -k "cuda or CUDA"
if [ -f "$OUT/tests.log" ]; then
    echo "tests passed: $(grep -c ' PASSED ' "$OUT/tests.log")"
    grep -E " (FAILED|ERROR) tests/" "$OUT/tests.log" | sort -u | tail -40
fi
wait
stage update_sac_standard update.log 200 python3 bench/update_step.py --device cuda \
    --cudagraphs --algos sac --sizes standard --rounds 5 --steps 200 --no-explain --no-memory \
    --out "$OUT" --name update_step_gpu
stage pure_1024 pure.log 200 python3 bench/pure.py --device cuda --seeds 1024 \
    --skip purejaxrl sb3 --out "$OUT" --name pure_gpu
stage purejaxrl_1024 pure.log 120 python3 bench/pure.py --device cuda --seeds 1024 \
    --skip funcrl sb3 --out "$OUT" --name pure_gpu_purejaxrl
for row in "td3 standard" "dqn standard" "sac small" "td3 small" "dqn small"; do
    set -- $row
    stage "update_$1_$2" update.log 110 python3 bench/update_step.py --device cuda \
        --cudagraphs --algos "$1" --sizes "$2" --rounds 5 --steps 200 --no-explain --no-memory \
        --out "$OUT" --name update_step_gpu
done
echo "== done at $(( $(date +%s) - START ))s"
python3 -c "
import json, sys
sys.path.insert(0, 'bench')
import update_step
p = json.load(open('$OUT/update_step_gpu.json'))
print(update_step.table(p['runs']))
" 2>&1 | tail -30
