#!/usr/bin/env bash
# The device half of scripts/gpu-check (copied to .device/run.sh). Needs no Rust:
# bin/ (unpacked from bin.tar.xz) holds the release cudaenc and the test executables, data/ the IMDB archive (if
# prepared with one), pytorch_reference.py the PyTorch step.
#
# Every step has its own timeout, and the whole run a budget (GPU_CHECK_BUDGET_S, default
# 420 s): a step is cut to what is left and skipped once less than 10 s is left, so the
# summary always prints. GPU_CHECK_STEPS (a bash regex on step names) runs only the
# matching steps, e.g. GPU_CHECK_STEPS='check' for a second call with only the sanitizers.
# Full logs go under $OUT (7 files); the summary table comes LAST.
# Order: what is cheap and gives the numbers nobody has yet first, the open-ended
# sanitizer runs last (the budget trims those first).
set -uo pipefail
cd "$(dirname "$0")"
OUT=${OUT:-$PWD/out}; mkdir -p "$OUT"
BUDGET_S=${GPU_CHECK_BUDGET_S:-420}
T0=$(date +%s)
# the binaries travel as one xz stream (scripts/gpu-check prepare)
if [[ -f bin.tar.xz && ! -x bin/cudaenc ]]; then
  tar -xJf bin.tar.xz 2>/dev/null || python3 -c 'import tarfile; tarfile.open("bin.tar.xz").extractall()' \
    || { echo "!! cannot unpack bin.tar.xz"; exit 1; }
fi
export CUDAENC_REQUIRE_CUDA=1            # GPU tests fail instead of skipping
export CUDAENC_CACHE=${TMPDIR:-/tmp}/cudaenc-cache
CS=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
PY=$(command -v python3 || echo python3)
# cuBLAS for the SGEMM limit (cudarc dlopens libcublas.so.13): the toolkit's, else torch's wheel
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib \
         $("$PY" -c 'import os,glob,torch; r=os.path.dirname(os.path.dirname(torch.__file__)); print(" ".join(glob.glob(r+"/nvidia/*/lib")))' 2>/dev/null); do
  ls "$d"/libcublas.so.* >/dev/null 2>&1 && { export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"; break; }
done
declare -a NAMES STATUS SECS LIMITS NOTES

record() { NAMES+=("$1"); STATUS+=("$2"); SECS+=("$3"); LIMITS+=("$4"); NOTES+=("$5"); }

# step NAME TIMEOUT_S LOG NOTE_FN CMD...   (NOTE_FN FILE prints a short note for the table)
step() {
  local name=$1 t=$2 log=$3 notefn=$4; shift 4
  [[ $name =~ ${GPU_CHECK_STEPS:-.} ]] || { record "$name" "SKIP(filter)" 0 "$t" ""; return; }
  local left=$(( BUDGET_S - ($(date +%s) - T0) ))
  if (( left < 10 )); then record "$name" "SKIP(budget)" 0 "$t" ""; echo "== $name: skipped, budget spent" | tee -a "$OUT/$log"; return; fi
  (( t > left - 5 )) && t=$(( left - 5 ))
  local tmp; tmp=$(mktemp)
  echo "== $name (timeout ${t}s): $*" | tee -a "$OUT/$log"
  local s; s=$(date +%s.%N)
  timeout -k 5 "$t" "$@" >"$tmp" 2>&1; local rc=$?
  local secs; secs=$(awk -v a="$s" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')
  cat "$tmp" >>"$OUT/$log"
  local st=ok
  case $rc in 0) ;; 124) st=TIMEOUT ;; 137) st=KILLED ;; *) st="FAIL($rc)" ;; esac
  record "$name" "$st" "$secs" "$t" "$($notefn "$tmp" 2>/dev/null | head -c 90)"
  echo "   -> $st in ${secs}s: ${NOTES[-1]}"
  rm -f "$tmp"
}

# notes for the summary
note_tail()  { grep -v '^\s*$' "$1" | tail -n 1; }
note_tests() { local p f; p=$(grep -ho '[0-9]* passed' "$1" | awk '{s+=$1} END{print s+0}'); f=$(grep -ho '[0-9]* failed' "$1" | awk '{s+=$1} END{print s+0}');
               echo "$p passed, $f failed$(grep -q 'CUDAENC_REQUIRE_CUDA is set' "$1" && echo ', no CUDA device')"; }
note_san()   { echo "$(grep -hoE '(ERROR|RACECHECK) SUMMARY: [0-9]+ [a-z]+' "$1" | sort | uniq -c | tr -s ' ' | paste -sd';' -) $(grep -q 'compute-sanitizer not found' "$1" && echo 'no compute-sanitizer;') $(note_tests "$1")"; }
note_bench() { echo "$(grep -c '^[a-z_]* .*[0-9]' "$1") rows; $(grep -E '^(copy|cublas_sgemm 8192) ' "$1" | awk '{print $1, $(NF-3), $(NF-2)}' | paste -sd';' -)"; }
note_step()  { grep '^STEPJSON' "$1" | tail -1 | cut -c10- | "$PY" -c 'import json,sys; print("; ".join(f"{r["preset"]} T={r["t"]} {r["ms_median"]:.1f} ms" for r in json.load(sys.stdin)))'; }
note_torch() { grep '^TORCHJSON' "$1" | tail -1 | cut -c11- | "$PY" -c 'import json,sys; d=json.load(sys.stdin); print(len(d["results"]), "configs,", len(d["skipped"]), "skipped/failed")'; }
note_train() { grep -oE 'epoch [0-9]+/[0-9]+: .*val loss [0-9.]+ acc [0-9.]+%.*\| [0-9.]+s' "$1" | sed -E 's/epoch ([0-9]+)\/[0-9]+: .*val loss [0-9.]+ acc ([0-9.]+%).*\| ([0-9.]+s)/e\1 val \2 \3/' | paste -sd' ' -; }

# 00 environment
{ cat VERSION; date -u; echo "budget ${BUDGET_S}s"; nvidia-smi -L; nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv;
  echo "compute-sanitizer: ${CS:-none}"; echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"; "$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'; } >"$OUT/00-env.log" 2>&1
cat "$OUT/00-env.log"
GPU=$(nvidia-smi -L 2>/dev/null | head -1)
[[ -n "$GPU" ]] || echo "!! no GPU found (nvidia-smi failed): every GPU step below is expected to fail fast"

# 01 correctness: info, every test binary on the GPU (emu and cuda devices)
step "cudaenc info" 30 01-tests.log note_tail bin/cudaenc info
for t in bin/test-*; do
  step "$(basename "$t")" 90 01-tests.log note_tests "$t"
done

# 02 one whole training step (every kernel of the model, CE and BCE) under memcheck
san() {  # san TOOL BINARY [TEST FILTER...]   (run through `bash -c`: timeout needs a program)
  local tool=$1 bin=$2; shift 2
  [[ -n "$CS" ]] || { echo "compute-sanitizer not found"; return 3; }
  # CUDAENC_ONLY_CUDA: the kernel tests skip their emulator half (CPU time, nothing to sanitize)
  CUDAENC_ONLY_CUDA=1 "$CS" --tool "$tool" --error-exitcode 9 --print-limit 20 "$bin" --test-threads=1 "$@"
}
export -f san; export CS
SAN=(bash -c 'san "$@"' san)
step "memcheck train_step" 90 02-memcheck.log note_san "${SAN[@]}" memcheck bin/test-train_step train_step_matches_f64_reference

# 04 performance: kernel table, whole steps, the PyTorch reference on the same card
step "bench kernels" 90 04-bench.log note_bench bin/cudaenc bench --device cuda --repeats 20
step "bench step (cudaenc)" 120 04-bench.log note_step bin/cudaenc bench --device cuda --step --steps 20
step "bench step (pytorch)" 135 04-bench.log note_torch "$PY" pytorch_reference.py --budget-s 120

# 05 short real-IMDB training per loss: validation accuracy and time per epoch
if [[ -f data/aclImdb-labeled.tar.gz ]]; then
  for loss in ce bce; do
    step "train imdb $loss (2 epochs)" 120 05-train.log note_train \
      bin/cudaenc train --device cuda --data data/aclImdb-labeled.tar.gz --loss "$loss" --preset gpu --epochs 2 --out "${TMPDIR:-/tmp}/gpu-check-$loss"
  done
else
  record "train imdb (2 epochs)" "SKIP(no data)" 0 0 "prepare with an archive: scripts/gpu-check prepare PATH"
fi

# 02/03 sanitizers over the kernel tests (emu parts run too: host speed)
for k in attention matmul layernorm embedding gradnorm adamw elementwise loss meanpool; do
  [[ -x bin/test-$k ]] && step "memcheck $k" 45 02-memcheck.log note_san "${SAN[@]}" memcheck "bin/test-$k"
done
for k in attention layernorm matmul embedding gradnorm; do
  [[ -x bin/test-$k ]] && step "racecheck $k" 45 03-racecheck.log note_san "${SAN[@]}" racecheck "bin/test-$k"
done
step "racecheck train_step" 90 03-racecheck.log note_san "${SAN[@]}" racecheck bin/test-train_step train_step_matches_f64_reference

# summary: the step/PyTorch ratio, then every step; printed LAST
{
  echo
  echo "== cudaenc vs PyTorch, same card, tokens/s (B x T positions per second; ratio = cudaenc / PyTorch)"
  "$PY" - "$OUT/04-bench.log" <<'PYEOF' 2>&1 || echo "(no step results to compare)"
import json, os, sys
lines = open(sys.argv[1], errors="replace").read().splitlines() if os.path.exists(sys.argv[1]) else []
step = [l for l in lines if l.startswith("STEPJSON ")]
torch = [l for l in lines if l.startswith("TORCHJSON ")]
ours = json.loads(step[-1][9:]) if step else []
ref = json.loads(torch[-1][10:]) if torch else {"results": [], "device": "?", "torch": "?"}
print(f"PyTorch {ref['torch']} on {ref['device']}")
cols = ["eager-fp32", "eager-tf32", "eager-bf16", "compile-bf16"]
print(f"{'preset':<8} {'T':>4} {'cudaenc':>10} " + " ".join(f"{c:>13}" for c in cols) + "  ratio vs " + ", ".join(cols))
keys = sorted({(r["preset"], r["t"]) for r in ours} | {(r["preset"], r["t"]) for r in ref["results"]})
for p, t in keys:
    o = next((r["tokens_per_s"] for r in ours if (r["preset"], r["t"]) == (p, t)), None)
    tv = {f"{r['mode']}-{r['precision']}": r["tokens_per_s"] for r in ref["results"] if (r["preset"], r["t"]) == (p, t)}
    fmt = lambda v: f"{v:>13.0f}" if v else f"{'-':>13}"
    ratios = ", ".join(f"{o / tv[c]:.2f}" if o and tv.get(c) else "-" for c in cols)
    print(f"{p:<8} {t:>4} {o if o is None else round(o):>10} " + " ".join(fmt(tv.get(c)) for c in cols) + f"  {ratios}")
PYEOF
  echo
  echo "== summary ($(cat VERSION); ${GPU:-NO GPU FOUND}; $(( $(date +%s) - T0 ))s of ${BUDGET_S}s budget)"
  [[ -n "$GPU" ]] || echo "!! no GPU: the GPU steps failed as expected; nothing here was measured on a GPU"
  printf '%-32s %-12s %7s %6s  %s\n' STEP RESULT SECONDS LIMIT NOTE
  for i in "${!NAMES[@]}"; do
    printf '%-32s %-12s %7s %6s  %s\n' "${NAMES[$i]}" "${STATUS[$i]}" "${SECS[$i]}" "${LIMITS[$i]}" "${NOTES[$i]}"
  done
} | tee "$OUT/99-summary.txt"
