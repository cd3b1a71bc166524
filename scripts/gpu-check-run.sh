#!/usr/bin/env bash
# The device half of scripts/gpu-check (copied to .device/run.sh). Needs no Rust.
set -uo pipefail
cd "$(dirname "$0")"
OUT=${OUT:-$PWD/out}; mkdir -p "$OUT"
CS=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
export CUDAENC_REQUIRE_CUDA=1
declare -a NAMES STATUS SECS
step() {  # step NAME TIMEOUT_S LOG CMD...
  local name=$1 t=$2 log=$3; shift 3
  local s=$(date +%s.%N)
  echo "== $name" | tee -a "$OUT/$log"
  timeout "$t" "$@" >>"$OUT/$log" 2>&1; local rc=$?
  local st=ok; (( rc == 124 )) && st=TIMEOUT; (( rc != 0 && rc != 124 )) && st="FAIL($rc)"
  NAMES+=("$name"); STATUS+=("$st"); SECS+=("$(echo "$(date +%s.%N) - $s" | bc 2>/dev/null || echo ?)")
  tail -n 5 "$OUT/$log"
}
{ cat VERSION; date -u; nvidia-smi -L; nvidia-smi --query-gpu=name,driver_version --format=csv; } 2>&1 | tee "$OUT/00-env.log"
step "cudaenc info" 60 01-info.log bin/cudaenc info
for t in bin/test-*; do
  step "$(basename "$t") (GPU)" 180 02-tests.log "$t" --test-threads=1
done
# sanitizers: the kernel tests only; broken test kernels are never launched on cuda
for tool in memcheck racecheck; do
  for t in bin/test-layernorm bin/test-emulator; do
    [[ -x $t ]] || continue
    step "$tool $(basename "$t")" 240 "03-$tool.log" "$CS" --tool "$tool" --error-exitcode 9 "$t" --test-threads=1
  done
done
echo
printf '%-40s %-10s %s\n' STEP RESULT SECONDS | tee "$OUT/99-summary.txt"
for i in "${!NAMES[@]}"; do
  printf '%-40s %-10s %s\n' "${NAMES[$i]}" "${STATUS[$i]}" "${SECS[$i]}" | tee -a "$OUT/99-summary.txt"
done
