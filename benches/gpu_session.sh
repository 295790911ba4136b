#!/usr/bin/env bash
# One GPU session in one device call: the fused CUDA sampler's throughput, the eager
# PyTorch baseline on a trained model of the same size side by side, every test binary
# with CUDA required, the CUDA matmul and the WGSL sampler (small, and at the CUDA
# bench's size), each under its own time limit so that one call of the device tool (at
# most 600 s) brings everything back.
#
# Dry run without a GPU, on the CUDA emulator (tests/cuda_emulator; a check of this
# script and of the binaries, no measurement): after the CUDA tests ran with
# AMORTIZE_CUDA_EMULATOR=1,
#   LD_PRELOAD=$PWD/target/tmp/cuda-emulator/current/libcuda.so AMORTIZE_CUDA_EMULATOR=1 \
#   AMORTIZE_BENCH_DRAWS=64 benches/gpu_session.sh run
#
# Here (Rust toolchain, no GPU):
#   benches/gpu_session.sh prepare
# builds .gpu/ (../shared/tools/gpu-bundle: release test and bench binaries, of which it
# keeps the GPU ones, GPU_BINARIES, so that .gpu/ stays under the 64 MiB a call carries) and adds a
# gaussian10 score model of width 128 trained on 10⁴ simulations (.gpu/g10-w128, the
# network size of benches/sample_cuda.rs) and observations for n = 1 and n = 8
# (.gpu/obs-n1.npy, .gpu/obs-n8.npy: n iid draws of x given one θ). Needs numpy in
# $PYTHON (default python3).
#
# There (the device tool, from the repository root):
#   run {command: "bash benches/gpu_session.sh run", carry: [".gpu"], timeout_s: 590}
# writes one log per step to $OUT (./gpu-session-out without $OUT) and prints a summary.
# Record what it measured in benches/RESULTS.md with the device name and the date.
set -uo pipefail

top=$(git rev-parse --show-toplevel 2>/dev/null || pwd)
cd "$top"

# The binaries a GPU session runs: every test that exercises CUDA, and the benches.
GPU_BINARIES="test-cuda_parity test-cuda_samplers test-cuda_compile test-device_training
test-device_layers bench-sample_cuda bench-matmul bench-sample_wgpu"

prepare() {
    set -e
    ../shared/tools/gpu-bundle
    for bin in .gpu/bin/*; do
        case " $(echo $GPU_BINARIES) " in
        *" $(basename "$bin") "*) ;;
        *) rm "$bin" ;;
        esac
    done
    cargo build --release --bin amortize
    local amortize=target/release/amortize
    "$amortize" simulate --task gaussian10 --num 10000 --seed 1 --out .gpu/g10-data
    "$amortize" train --data .gpu/g10-data --task gaussian10 --out .gpu/g10-w128 --width 128 --epochs 150
    rm -rf .gpu/g10-data
    "${PYTHON:-python3}" - <<'PY'
import numpy as np

# gaussian10: θ ~ N(0, I₁₀), x ~ N(θ, diag(linspace(0.6, 1.4, 10))); n draws of x given one θ.
rng = np.random.default_rng(1)
theta = rng.standard_normal(10)
sd = np.sqrt(np.linspace(0.6, 1.4, 10))
for n in (1, 8):
    x = theta + sd * rng.standard_normal((n, 10))
    np.save(f".gpu/obs-n{n}.npy", x.astype(np.float32))
PY
    du -sh .gpu
}

# step NAME SECONDS COMMAND...: runs COMMAND under a time limit, its output to $out/NAME.log.
step() {
    local name=$1 limit=$2
    shift 2
    local start=$SECONDS
    timeout "$limit" "$@" >"$out/$name.log" 2>&1
    local rc=$?
    echo "$name: exit $rc after $((SECONDS - start)) s (limit $limit s)" | tee -a "$out/summary.txt"
}

run() {
    out=${OUT:-gpu-session-out}
    mkdir -p "$out"
    nvidia-smi >"$out/nvidia-smi.txt" 2>&1
    date -u >"$out/summary.txt"
    # The headline first: fused Algorithm 2 (n = 1, n = 8 Geffner and GAUSS, 10⁵ draws),
    # then eager PyTorch (and torch.compile) on the trained model at the same size.
    step sample_cuda 90 .gpu/run bench-sample_cuda
    for n in 1 8; do
        step "torch_reference_n$n" 100 python3 benches/torch_reference.py \
            --model .gpu/g10-w128 --obs ".gpu/obs-n$n.npy" --num 100000 --levels 400
    done
    step tests 130 .gpu/run
    step matmul 45 .gpu/run bench-matmul --bench --warm-up-time 1 --measurement-time 2
    # The fused WGSL sampler, small (its CPU ratio) and at sample_cuda's size (its CUDA ratio).
    step sample_wgpu 30 .gpu/run bench-sample_wgpu
    AMORTIZE_BENCH_SIZE=gaussian10 step sample_wgpu_gaussian10 60 .gpu/run bench-sample_wgpu
    cat "$out/summary.txt"
}

case "${1:-}" in
prepare) prepare ;;
run) run ;;
*)
    echo "usage: benches/gpu_session.sh prepare|run" >&2
    exit 2
    ;;
esac
