#!/usr/bin/env bash
# CUDA checks for the lent GPU machine (docs/CUDA.md). Two steps, because that machine has nvcc, CMake and the
# CUDA libraries but not the Debian libraries diffulex builds against (fmt, CLI11, nlohmann-json, PCRE2, utf8proc,
# GoogleTest):
#
#   tools/gpu_test.sh pack   on the build machine: builds build-cuda (CUDA ON, sm_90 + PTX) and copies the two
#                            binaries and the shared libraries they need that the GPU machine lacks into .gpubin/
#                            (git-ignored through .gitignore; the device call carries it).
#   tools/gpu_test.sh w4a16  on the GPU machine: the W4A16 kernels' tests, kernel table and sanitizers (see w4a16()).
#   tools/gpu_test.sh profile  on the GPU machine: ncu's per-kernel device time of a Dream-7B B = 1 decode step
#                            (issue 15; see profile()).
#   tools/gpu_test.sh ragged   on the GPU machine: continuous batching's ragged pass with and without the one-launch
#                            attention (see ragged()).
#   tools/gpu_test.sh paths  on the GPU machine: a W4A16 decode step with each W4A16 path forced (see paths()).
#   tools/gpu_test.sh decode  on the GPU machine: the Dream-7B dual-cache decode table, bf16 and W4A16 (see
#                            decode_table()).
#   tools/gpu_test.sh tests  on the GPU machine: the tests of TESTS (a gtest filter), memcheck on MEMCHECK (see
#                            tests_only()).
#   tools/gpu_test.sh quantize  on the GPU machine: RTN / GPTQ / AWQ quantization timed at Dream-7B's widths (issue 17;
#                            QUANT_RUNS, QUANT_TESTS: see quantize_timing()).
#   tools/gpu_test.sh run    on the GPU machine, from the repository root: the CUDA unit tests (every op against the
#                            CPU backend), the golden fixtures with --device cuda, compute-sanitizer (memcheck on
#                            all of them, racecheck and synccheck on the shared-memory kernels; run last, each
#                            under a time limit), and the benchmark `diffulex bench --device cuda --random-config
#                            dream-7b` (before the sanitizers). Logs and JSON go to $OUT
#                            (or ./gpu_out); the summary is printed last.
#
# Options for run (environment): BENCH_PRESETS="dream-7b llada-8b" (default dream-7b), BENCH_NOTUNE=1 (also B=1
# with cuBLASLt's first heuristic choice instead of timed algorithm selection), SKIP_SANITIZER=1,
# SKIP_CPU_TESTS=1.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=$ROOT/.gpubin

pack() {
  set -e
  cmake -S "$ROOT" -B "$ROOT/build-cuda" -DCMAKE_BUILD_TYPE=Release -DDIFFULEX_CUDA=ON >/dev/null
  cmake --build "$ROOT/build-cuda" -j2 --target diffulex diffulex_tests
  rm -rf "$BIN"
  mkdir -p "$BIN/lib"
  cp "$ROOT/build-cuda/diffulex" "$ROOT/build-cuda/diffulex_tests" "$BIN/"
  # Shared libraries from this machine's Debian packages (not the C/C++ runtime, not CUDA's: the GPU machine has
  # its own driver and toolkit).
  for lib in $(ldd "$BIN/diffulex_tests" "$BIN/diffulex" | awk '/=> \//{print $3}' | sort -u); do
    case "$(basename "$lib")" in
      libc.so*|libm.so*|libgcc_s.so*|libstdc++.so*|libpthread.so*|libdl.so*|librt.so*|ld-linux*|libcublas*|libcuda*|libcusolver*|libcusparse*|libnvJitLink*) ;;
      *) cp -L "$lib" "$BIN/lib/" ;;
    esac
  done
  strip "$BIN/diffulex" "$BIN/diffulex_tests"
  # The device call carries at most 64 MiB (the working tree included): the binaries and libraries travel compressed,
  # ~15 MB instead of ~43 (setup_env unpacks them). The call must name .gpubin in its carry list (it is git-ignored).
  tar -C "$BIN" -cJf "$BIN/lib.tar.xz" lib && rm -rf "$BIN/lib"
  xz -T2 -6 "$BIN/diffulex" "$BIN/diffulex_tests"
  echo "$ROOT" >"$BIN/source_dir"  # compiled into the binaries (fixture and CLI paths)
  du -sh "$BIN"
  tar -tJf "$BIN/lib.tar.xz"
}

# One line per batch size (and the per-op times) from a bench JSON file.
summarize() {
  python3 - "$1" <<'EOF' || true
import json, sys
j = json.load(open(sys.argv[1]))
c = j.get("ceilings", {})
print(f"{j['source']} on {j['backend']}  ceilings: copy {c.get('copy_GBps', 0):.0f} GB/s, bf16 {c.get('matmul_TFLOPs', 0):.0f} TFLOP/s")
for r in j["runs"]:
    print(f"B={r['batch']:>3} T={r['tokens']:>5}  forward {r['forward_ms_median']:8.2f} ms  {r['TFLOPs']:6.1f} TFLOP/s  "
          f"weights {r['weight_GBps']:6.0f} GB/s  floor {r.get('floor_ms', 0):6.2f} ms  ops sum {r.get('ops_ms_sum', 0):8.2f} ms  "
          f"act peak {r['memory'].get('activation_peak_bytes', 0)/2**30:.2f} GiB  device used {r['memory'].get('device_used_bytes', 0)/2**30:.1f} GiB")
    ops = sorted(r.get("ops", {}).items(), key=lambda kv: -kv[1]["ms_median"])
    print("      " + ", ".join(f"{k} {v['ms_median']:.2f}" for k, v in ops))
EOF
}

# The binaries find the fixtures and the CLI through paths compiled in on the build machine; the libraries they need
# are in .gpubin/lib, cuBLAS in the toolkit or torch's wheel.
setup_env() {
  local src cublas_py
  src=$(cat "$BIN/source_dir" 2>/dev/null || echo /work/main)
  if [ -f "$BIN/lib.tar.xz" ] && [ ! -d "$BIN/lib" ]; then tar -C "$BIN" -xJf "$BIN/lib.tar.xz"; fi
  local bin
  for bin in "$BIN"/*.xz "$BIN"/*/*.xz; do  # the binaries (pack) and any other build carried beside them, e.g. base/
    case $bin in *.tar.xz) continue ;; esac  # the libraries, unpacked above (or a carried build's own)
    [ -f "$bin" ] && [ ! -e "${bin%.xz}" ] && xz -dk "$bin" && chmod +x "${bin%.xz}"
  done
  if [ ! -e "$src" ]; then mkdir -p "$(dirname "$src")" && ln -s "$ROOT" "$src"; fi
  mkdir -p "$ROOT/build-cuda" && cp "$BIN/diffulex" "$ROOT/build-cuda/diffulex"
  cublas_py=$(python3 -c 'import nvidia.cublas, os; print(os.path.join(list(nvidia.cublas.__path__)[0], "lib"))' 2>/dev/null || true)
  export LD_LIBRARY_PATH="$BIN/lib:/usr/local/cuda/lib64:${cublas_py}:${LD_LIBRARY_PATH:-}"
}

# compute-sanitizer's tools over the test binary: sanitize OUT TOOL FILTER [TOOL FILTER ...]; one summary line each.
sanitize() {
  local out=$1 status=0
  shift
  export DIFFULEX_TEST_SMALL=1 DIFFULEX_CUDA_GEMM_TUNE=0  # smaller W4A16 cases; no cuBLASLt timing under the tools
  while [ $# -ge 2 ]; do
    timeout 240 compute-sanitizer --tool "$1" --error-exitcode 3 "$BIN/diffulex_tests" --gtest_filter="$2" \
      >"$out/$1.log" 2>&1 || status=1
    echo "$1: $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$out/$1.log" | tail -1) $(grep -E '^\[  (PASSED|FAILED) ' "$out/$1.log" | tr '\n' ' ')"
    shift 2
  done
  return $status
}

run() {
  local out=${OUT:-$ROOT/gpu_out}
  mkdir -p "$out"
  local status=0
  setup_env
  nvidia-smi 2>&1 | head -12
  nvcc --version | tail -2
  if ldd "$BIN/diffulex_tests" | grep -q "not found"; then
    ldd "$BIN/diffulex_tests"
    echo "missing shared libraries"; return 1
  fi

  # Each stage runs under a time limit, so that a hang leaves the later stages (and the logs) intact.
  echo "== unit tests and golden fixtures on cuda"
  timeout 300 "$BIN/diffulex_tests" --gtest_filter='*Cuda*:W4A16*' >"$out/tests.log" 2>&1 || status=1
  grep -E "^\[  (PASSED|FAILED|SKIPPED) |cuda golden|^\[  FAILED  \]|Failure|error" "$out/tests.log" | head -60
  for preset in ${BENCH_PRESETS:-dream-7b}; do
    echo "== bench $preset"
    timeout 180 "$BIN/diffulex" bench --device cuda --random-config "$preset" --batch 1,8,32 --length 288 --block 32 \
      --output "$out/bench_$preset.json" >>"$out/bench.log" 2>&1 || { status=1; tail -5 "$out/bench.log"; }
    summarize "$out/bench_$preset.json"
  done
  if [ "${BENCH_NOTUNE:-0}" = 1 ]; then
    echo "== bench dream-7b, B=1, GEMM algorithm = cuBLASLt heuristic's first choice (no timing)"
    DIFFULEX_CUDA_GEMM_TUNE=0 timeout 60 "$BIN/diffulex" bench --device cuda --random-config dream-7b --batch 1 --no-ceilings \
      --output "$out/bench_dream-7b_notune.json" >>"$out/bench.log" 2>&1 || status=1
    summarize "$out/bench_dream-7b_notune.json"
  fi

  if [ "${SKIP_CPU_TESTS:-0}" != 1 ]; then
    echo "== the same binaries' CPU tests (bench JSON, CPU golden fixtures, forward CLI)"
    timeout 90 "$BIN/diffulex_tests" --gtest_filter='BenchCli*:Backends/*/Cpu:ForwardCli*' >>"$out/tests.log" 2>&1 || status=1
    grep -E "^\[  (PASSED|FAILED) " "$out/tests.log" | tail -2
  fi

  if [ "${SKIP_SANITIZER:-0}" != 1 ]; then
    echo "== compute-sanitizer"
    sanitize "$out" memcheck 'CudaOps*:Backends/Golden.FixturesMatch*/Cuda:Backends/Golden.DequantCache*/Cuda:Backends/Golden.LogitRows*/Cuda:Backends/SampleRows.*/Cuda:CudaSample*:CudaFusedGateUp*:CudaEmbedOnHost*:W4A16*:CudaFp8Kv*-CudaSample.Timing*' \
      racecheck 'CudaOps.Attention*:CudaOps.RmsNorm*:CudaOps.PackedMatmul*:Backends/SampleRows.GumbelRuleAndGuidance*/Cuda:Backends/SampleRows.RejectsBadDraws*/Cuda:W4A16.MatchesDequantizedReference' \
      synccheck 'CudaOps.Attention*:CudaOps.RmsNorm*:CudaOps.PackedMatmul*:Backends/SampleRows.GumbelRuleAndGuidance*/Cuda:Backends/SampleRows.RejectsBadDraws*/Cuda' || status=1
  fi

  echo "== done (status $status)"
  return $status
}

# The W4A16 kernels alone (issue-sized runs inside one device call): their tests and the attention tests, the kernel
# table of `bench --w4a16-kernels` (JSON in $OUT/w4a16.json), memcheck and racecheck on the kernels' small test
# cases, and with W4A16_DECODE=1 the end-to-end decode and forward benches for bf16 and W4A16.
w4a16() {
  local out=${OUT:-$ROOT/gpu_out}
  mkdir -p "$out"
  local status=0
  setup_env
  nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,memory.total --format=csv,noheader
  echo "== W4A16 and attention tests"
  timeout 240 "$BIN/diffulex_tests" --gtest_filter="${W4A16_TESTS:-W4A16*:CudaOps.Attention*}" >"$out/tests.log" 2>&1 || status=1
  grep -E "^\[  (PASSED|FAILED) |^\[  FAILED  \]|Failure|Expected|Which is|rel_error|path:" "$out/tests.log" | head -40
  echo "== bench --w4a16-kernels"
  timeout "${W4A16_BENCH_TIMEOUT:-300}" "$BIN/diffulex" bench --device cuda --w4a16-kernels ${W4A16_BENCH_ARGS:-} \
    --output "$out/w4a16.json" >"$out/w4a16_bench.log" 2>&1 || { status=1; tail -5 "$out/w4a16_bench.log"; }
  grep -E "M=" "$out/w4a16_bench.log"
  if [ "${W4A16_DECODE:-0}" = 1 ]; then
    echo "== bench decode / forward, bf16 and W4A16"
    decode_table || status=1
    for q in none w4a16; do
      timeout 120 "$BIN/diffulex" bench --device cuda --random-config dream-7b --quant $q --batch 1,8,32 --length 288 \
        --block 32 --no-ceilings --output "$out/forward_$q.json" >"$out/forward_$q.log" 2>&1 || status=1
      summarize "$out/forward_$q.json"
    done
  fi
  if [ "${SKIP_SANITIZER:-0}" != 1 ]; then
    echo "== compute-sanitizer on the W4A16 kernels (small cases)"
    sanitize "$out" memcheck 'W4A16.MatchesDequantizedReference:CudaOps.Attention*' \
      racecheck 'W4A16.MatchesDequantizedReference' || status=1
    echo "   (again with the weights and scale words by tensor copies, DIFFULEX_W4A16_TMA_WEIGHTS=1)"
    mkdir -p "$out/tma_weights"
    DIFFULEX_W4A16_TMA_WEIGHTS=1 sanitize "$out/tma_weights" memcheck 'W4A16.MatchesDequantizedReference' \
      racecheck 'W4A16.MatchesDequantizedReference' || status=1
  fi
  echo "== done (status $status)"
  return $status
}

# Chosen tests on the GPU: diffulex_tests --gtest_filter="$TESTS" (default '*Cuda*:W4A16*'), then, with MEMCHECK set,
# compute-sanitizer memcheck on that filter (small cases). Logs in $OUT/tests.log and $OUT/memcheck.log.
tests_only() {
  setup_env
  local out=${OUT:-$ROOT/gpu_out} status=0
  mkdir -p "$out"
  echo "== tests: ${TESTS:-*Cuda*:W4A16*}"
  timeout "${TESTS_TIMEOUT:-240}" "$BIN/diffulex_tests" --gtest_filter="${TESTS:-*Cuda*:W4A16*}" >"$out/tests.log" 2>&1 ||
    status=1
  grep -E "^\[  (PASSED|FAILED|SKIPPED) |^\[  FAILED  \]|Failure|Expected|Which is|seed" "$out/tests.log" | head -40
  if [ -n "${MEMCHECK:-}" ]; then
    echo "== compute-sanitizer memcheck: $MEMCHECK"
    sanitize "$out" memcheck "$MEMCHECK" || status=1
  fi
  return $status
}

# The decode table (issue 14's goal 3, issue 15's goal 2): `bench decode --random-config dream-7b --cache dual
# --gen-length 32 --block 32 --blocks 1`, graphs on, for each of DECODE_QUANTS (default "w4a16 none") at DECODE_BATCH
# (default 1,8,32,64) and DECODE_TPS (tokens a step, default 1,4): one line per row (step median, tokens/s) and the
# W4A16 tuner's choices (w4a16_paths). DECODE_ENV: more W4A16 runs, one per word, each with that environment setting
# (e.g. "DIFFULEX_W4A16_SWIGLU=1"); DECODE_BASE: another diffulex binary's W4A16 run (same card, same call). JSON and
# logs in $OUT/decode_<name>.*.
decode_table() {
  setup_env
  local out=${OUT:-$ROOT/gpu_out} status=0 spec name q bin env
  mkdir -p "$out"
  local runs=()
  for q in ${DECODE_QUANTS:-w4a16 none}; do runs+=("$q|$BIN/diffulex|$q|"); done
  for env in ${DECODE_ENV:-}; do runs+=("w4a16_${env%%=*}|$BIN/diffulex|w4a16|$env"); done
  [ -n "${DECODE_BASE:-}" ] && runs+=("w4a16_base|$DECODE_BASE|w4a16|")
  for spec in "${runs[@]}"; do
    IFS='|' read -r name bin q env <<<"$spec"
    env $env timeout 200 "$bin" bench decode --device cuda --random-config dream-7b --quant "$q" \
      --batch "${DECODE_BATCH:-1,8,32,64}" --cache dual --tokens-per-step "${DECODE_TPS:-1,4}" --gen-length 32 \
      --block 32 --blocks 1 --output "$out/decode_$name.json" >"$out/decode_$name.log" 2>&1 ||
      { status=1; echo "== $name: failed"; tail -3 "$out/decode_$name.log"; continue; }
    python3 - "$out/decode_$name.json" "$name" <<'PY' || status=1
import json, sys
j = json.load(open(sys.argv[1]))
for r in j["runs"]:
    print(f"== {sys.argv[2]:24s} B={r['batch']:>3} tokens/step {r['tokens_per_step']}: step {r['step_ms_median']:8.3f} ms, "
          f"{r['tokens_per_s']:8.1f} tokens/s")
paths = j.get("w4a16_paths", [])
if paths:
    print(f"   SwiGLU epilogue {'on' if j.get('w4a16_swiglu_epilogue') else 'off'}; tuner:",
          "; ".join(f"[{c['N']}x{c['K']}] M<={c['m_bucket']} {c['path']}" for c in paths))
PY
  done
  return $status
}

# Where a decode step's device time goes (issue 15): Nsight Compute's duration of every kernel of a Dream-7B
# dual-cache decode at B = 1 (one block of 32 at 4 tokens a step: 8 steps and the prefill; ncu serializes and
# replays each kernel, graph nodes included, so the launch gaps are not in these sums), for PROFILE_QUANT (default
# "w4a16 none"). Per configuration: the CSV in $OUT/ncu_<quant>.csv, the plain bench JSON without ncu beside it (the
# step time in a graph, to set against the kernels' sum), and tables per kernel name (launches, total ms, mean us)
# for the run's last decode step and for the whole run. PROFILE_GEMM_DETAIL=1 first profiles one layer's four W4A16
# GEMMs with every ncu section (bandwidth against DRAM and L2, warp stalls); PROFILE_QUANT="" then skips the rest.
profile() {
  setup_env
  local out=${OUT:-$ROOT/gpu_out} status=0 q
  mkdir -p "$out"
  local args=(bench decode --device cuda --random-config dream-7b --batch 1 --cache dual --tokens-per-step 4
              --gen-length 32 --block 32 --blocks 1)
  local sk
  if [ "${PROFILE_GEMM_DETAIL:-0}" = 1 ]; then
    # One layer's four W4A16 GEMMs of a B = 1 step (launches 4000.. of the run: past the tuner and the prefill), every
    # ncu section: how far each is from the DRAM and L2 bandwidth, and where its warps stall. Either W4A16 kernel (the
    # tuner takes the mma.sync one for some shapes at 32 rows and fewer).
    echo "== W4A16 GEMMs of one B = 1 decode step: ncu --set full"
    timeout 150 ncu --set full --csv --page raw -k regex:w4a16 --launch-skip 4000 --launch-count 4 \
      "$BIN/diffulex" bench decode --device cuda --random-config dream-7b --quant w4a16 --batch 1 --cache dual \
      --tokens-per-step 1 --gen-length 64 --block 32 --blocks 2 >"$out/ncu_gemms.csv" 2>"$out/ncu_gemms.log" ||
      { status=1; tail -3 "$out/ncu_gemms.log"; }
    python3 - "$out/ncu_gemms.csv" <<'PY' || status=1
import csv, sys
rows = list(csv.reader(l for l in open(sys.argv[1]) if l.startswith('"')))
if len(rows) < 3: sys.exit(print("no ncu rows"))
want = ["launch__grid_size", "gpu__time_duration.sum", "dram__throughput.avg.pct_of_peak_sustained_elapsed",
        "dram__bytes_read.sum", "lts__throughput.avg.pct_of_peak_sustained_elapsed", "lts__t_bytes.sum",
        "sm__throughput.avg.pct_of_peak_sustained_elapsed", "smsp__issue_active.avg.pct_of_peak_sustained_active",
        "sm__pipe_tensor_op_gmma_cycles_active.avg.pct_of_peak_sustained_active", "launch__registers_per_thread"]
for r in rows[2:]:  # rows[1] holds the units
    d = dict(zip(rows[0], r))
    print("  ", ", ".join(f"{k.split('__')[1]} {d[k]}" for k in want if k in d))
    st = []
    for k, v in d.items():
        if k.startswith("smsp__average_warps_issue_stalled_") and k.endswith("_per_issue_active.ratio"):
            try: st.append((k[34:-23], float(v.replace(",", ""))))
            except ValueError: pass
    print("     stalls:", ", ".join(f"{k} {v:.2f}" for k, v in sorted(st, key=lambda kv: -kv[1])[:7]))
PY
  fi
  for q in ${PROFILE_QUANT-w4a16 none}; do
    # The plain step, once per split-KV setting of the attention (PROFILE_SPLIT_KV, DIFFULEX_ATTENTION_SPLIT_KV
    # values; launch.h); ncu below runs with the environment as given.
    for sk in ${PROFILE_SPLIT_KV:-${DIFFULEX_ATTENTION_SPLIT_KV:-0}}; do
      echo "== decode step, $q, DIFFULEX_ATTENTION_SPLIT_KV=$sk: bench without ncu"
      DIFFULEX_ATTENTION_SPLIT_KV=$sk timeout 200 "$BIN/diffulex" "${args[@]}" --quant "$q" \
        --output "$out/step_${q}_sk$sk.json" >"$out/step_${q}_sk$sk.log" 2>&1 || { status=1; tail -5 "$out/step_${q}_sk$sk.log"; }
      python3 -c 'import json, sys
def walk(j):
    if isinstance(j, dict):
        print("   ", {k: v for k, v in j.items() if "step_ms" in k or k in ("batch", "cache", "tokens_per_step")}) if any("step_ms" in k for k in j) else None
        for v in j.values(): walk(v)
    elif isinstance(j, list):
        for v in j: walk(v)
walk(json.load(open(sys.argv[1])))' "$out/step_${q}_sk$sk.json" || true
    done
    echo "== decode step, $q: ncu gpu__time_duration.sum per kernel"
    timeout 400 ncu --clock-control none --metrics gpu__time_duration.sum --csv --print-units base \
      "$BIN/diffulex" "${args[@]}" --quant "$q" >"$out/ncu_$q.csv" 2>"$out/ncu_$q.log" ||
      { status=1; tail -5 "$out/ncu_$q.log"; }
    python3 - "$out/ncu_$q.csv" <<'PY' || status=1
import csv, collections, re, sys
rows = [r for r in csv.DictReader(l for l in open(sys.argv[1]) if l.startswith('"'))
        if r.get("Metric Name") == "gpu__time_duration.sum"]
def table(rows, title, top):
    tot, cnt = collections.defaultdict(float), collections.Counter()
    for r in rows:
        name = re.sub(r"^void |\(anonymous namespace\)::|dlx::cuda::", "", r["Kernel Name"]).split("(")[0][:90]
        tot[name] += float(r["Metric Value"].replace(",", "")) / 1e6  # ns -> ms
        cnt[name] += 1
    print(f"{title}: {len(rows)} kernels, {sum(tot.values()):.3f} ms")
    for name, ms in sorted(tot.items(), key=lambda kv: -kv[1])[:top]:
        print(f"  {cnt[name]:6d} x {1e3 * ms / cnt[name]:9.2f} us = {ms:9.3f} ms  {name}")
# One step: the kernels after the second-to-last sampling kernel up to and including the last (every step ends
# with sample_rows_kernel); the whole run also holds the prefill, the warm-ups and the W4A16 / cuBLASLt tuners.
ends = [i for i, r in enumerate(rows) if "sample_rows_kernel" in r["Kernel Name"]]
if len(ends) >= 2:
    table(rows[ends[-2] + 1:ends[-1] + 1], "one decode step (the last)", 30)
table(rows, "the whole run", 12)
PY
  done
  return $status
}

# Continuous batching's ragged window pass (issue 15): `bench --ragged` on Dream-7B W4A16, B = 1, 8, 32, with the
# per-slot attention (DIFFULEX_SLOT_ATTENTION=0) and the one-launch native path (=1); JSON in $OUT/ragged_<flag>.json,
# one line per batch size: the ragged pass (B slots) against one uniform batch of B rows.
ragged() {
  setup_env
  local out=${OUT:-$ROOT/gpu_out} status=0 f
  mkdir -p "$out"
  for f in 0 1; do
    echo "== bench --ragged, DIFFULEX_SLOT_ATTENTION=$f"
    DIFFULEX_SLOT_ATTENTION=$f timeout 240 "$BIN/diffulex" bench --device cuda --random-config dream-7b --quant w4a16 \
      --batch 1,8,32 --length 288 --block 32 --no-ceilings --ragged --output "$out/ragged_$f.json" \
      >"$out/ragged_$f.log" 2>&1 || { status=1; tail -5 "$out/ragged_$f.log"; continue; }
    python3 -c 'import json, sys
for r in json.load(open(sys.argv[1]))["runs"]:
    b, rg, un = r["batch"], r.get("ragged_window_ms_median", 0), r.get("uniform_window_ms_median", 0)
    print(f"   B={b:>3}  ragged {rg:8.3f} ms  uniform {un:8.3f} ms")' \
      "$out/ragged_$f.json" || status=1
  done
  return $status
}

# Which W4A16 path a decode step wants (issue 14: on one H100 the B = 8 W4A16 step took 13.95 ms on main and
# 10.90 ms with session 11's build; this function found the cause, the tuner's M key, docs/PERFORMANCE.md "Session
# 15"; the next run checks the fix, tuner vs the best forced path): `bench decode --quant w4a16` at PATHS_BATCH
# (default 8) with DIFFULEX_W4A16_PATH = auto (the tuner: its choices per weight and M bucket are printed from the
# JSON's w4a16_paths), then each fixed path (PATHS_LIST: which, in order); with PATHS_BASE (another diffulex binary)
# that one's auto run too.
paths() {
  setup_env
  local out=${OUT:-$ROOT/gpu_out} status=0 p bin
  mkdir -p "$out"
  for p in ${PATHS_LIST:-auto mma wgmma wgmma_narrow wgmma_tall wgmma_fit dequant} ${PATHS_BASE:+base}; do
    bin=$BIN/diffulex
    [ "$p" = base ] && bin=$PATHS_BASE
    DIFFULEX_W4A16_PATH=$([ "$p" = base ] && echo auto || echo "$p") timeout 120 "$bin" bench decode --device cuda \
      --random-config dream-7b --quant w4a16 --batch "${PATHS_BATCH:-8}" --cache dual --tokens-per-step 1 \
      --gen-length 32 --block 32 --blocks 1 --output "$out/paths_$p.json" >"$out/paths_$p.log" 2>&1 ||
      { status=1; echo "== $p: failed"; tail -3 "$out/paths_$p.log"; continue; }
    python3 - "$out/paths_$p.json" "$p" <<'PY' || status=1
import json, sys
j = json.load(open(sys.argv[1]))
print(f"== {sys.argv[2]:13s}", "  ".join(f"B={r['batch']} {r['step_ms_median']:.3f} ms" for r in j["runs"]))
for c in j.get("w4a16_paths", []) if sys.argv[2] in ("auto", "base") else []:
    print(f"     [{c['N']} x {c['K']}] g{c['group_size']} M<={c['m_bucket']}: {c['path']}")
PY
  done
  return $status
}

# Issue 17's timing: RTN, GPTQ and AWQ with the calibration forward and the heavy math on the GPU, on random
# checkpoints at Dream-7B's widths, 128 x 512 random calibration ids (uniform in [0, 151000), seeded), group
# 128, `diffulex -v quantize --device cuda` under /usr/bin/time -v (peak RSS). Logs in $OUT; per run it prints
# the wall time, exit status, peak RSS, the phase line and the last progress line with the seconds per layer (also
# for a run stopped by its time limit: the quantizer prints the phases of the layers done when interrupted).
#   QUANT_RUNS   runs, each METHOD[:OPTION...] with METHOD rtn | gptq | awq (default "gptq awq") and options
#                desc-act (GPTQ act-order), sync (DIFFULEX_QUANT_SYNC_PHASES=1: phase times include their device
#                work), layers=N (default QUANT_LAYERS, 4), timeout=S (SIGTERM after S seconds, then SIGKILL 40 s
#                later: the quantizer stops at the next layer boundary; default none). Models are made once per
#                layer count.
#   QUANT_TESTS  a gtest filter run first (the quantizer's CUDA unit tests), e.g. 'CudaQuantLinalg*'.
#   QUANT_CALIB  calibration size BxL (default 128x512); QUANT_DEVICE (default cuda; cpu for a dry run of this
#                script on the build machine with a small QUANT_CALIB and layers=1).
quantize_timing() {
  setup_env
  local out=${OUT:-$ROOT/gpu_out} tmp status=0 spec
  mkdir -p "$out"
  tmp=$(mktemp -d)
  if [ -n "${QUANT_TESTS:-}" ]; then
    echo "== unit tests: $QUANT_TESTS"
    timeout 240 "$BIN/diffulex_tests" --gtest_filter="$QUANT_TESTS" >"$out/quant_tests.log" 2>&1 || status=1
    grep -E "^\[  (PASSED|FAILED|SKIPPED) |^\[  FAILED  \]|^\[       OK \]|Failure|Expected|Which is|seed" \
      "$out/quant_tests.log" | head -40
  fi
  # Random calibration ids I64 [B, L] in [0, 151000), written as safetensors by hand (no torch needed).
  python3 - "$tmp/calib.safetensors" "${QUANT_CALIB:-128x512}" <<'PY' || { echo "calibration ids failed"; rm -rf "$tmp"; return 1; }
import json, random, struct, sys
b, l = (int(v) for v in sys.argv[2].split("x"))
rng = random.Random(0)
data = struct.pack(f"<{b * l}q", *(rng.randrange(151000) for _ in range(b * l)))
head = json.dumps({"input_ids": {"dtype": "I64", "shape": [b, l], "data_offsets": [0, len(data)]}}).encode()
head += b" " * (-len(head) % 8)
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<Q", len(head)) + head + data)
PY
  local timer=()
  [ -x /usr/bin/time ] && timer=(/usr/bin/time -v)
  for spec in ${QUANT_RUNS:-gptq awq}; do
    local method=${spec%%:*} layers=${QUANT_LAYERS:-4} limit=0 args=() envs=() opt name=${spec//[:=]/_}
    IFS=: read -r -a opts <<<"$spec"
    for opt in "${opts[@]:1}"; do
      case "$opt" in
        desc-act) args+=(--desc-act) ;;
        sync) envs+=(DIFFULEX_QUANT_SYNC_PHASES=1) ;;
        layers=*) layers=${opt#layers=} ;;
        timeout=*) limit=${opt#timeout=} ;;
        *) echo "unknown option $opt in QUANT_RUNS entry $spec"; status=1; continue 2 ;;
      esac
    done
    if [ ! -d "$tmp/model$layers" ]; then
      local t0=$SECONDS
      "$BIN/diffulex" random-model --preset dream-7b --layers "$layers" --output "$tmp/model$layers" \
        >"$out/random_model_$layers.log" 2>&1 ||
        { echo "random-model --layers $layers failed:"; tail -5 "$out/random_model_$layers.log"; status=1; continue; }
      echo "== random-model --preset dream-7b --layers $layers: $((SECONDS - t0)) s ($(du -sh "$tmp/model$layers" | cut -f1))"
    fi
    local fmt=gptq
    [ "$method" = awq ] && fmt=awq
    local lim=()
    [ "$limit" != 0 ] && lim=(timeout -k 40 "$limit")
    local t0=$SECONDS rc=0
    env "${envs[@]}" "${timer[@]}" "${lim[@]}" "$BIN/diffulex" -v quantize --model-path "$tmp/model$layers" \
      --output-path "$tmp/out_$name" --quant-format $fmt --method "$method" "${args[@]}" \
      --calib-ids "$tmp/calib.safetensors" --device "${QUANT_DEVICE:-cuda}" >"$out/quantize_$name.log" 2>&1 || rc=$?
    [ $rc = 0 ] || status=1
    echo "== $spec, $layers layers of Dream-7B: $((SECONDS - t0)) s wall, exit $rc$(case $rc in 124) echo ' (time limit: stopped at a layer boundary)' ;; 137) echo ' (time limit: killed inside a layer, no phases or peak RSS)' ;; esac)"
    grep -E "Maximum resident set size" "$out/quantize_$name.log" |
      awk '{printf "   peak RSS %.2f GB\n", $NF / 1e6}'
    grep -E "quantize phases" "$out/quantize_$name.log" | tail -1 | sed 's/^/   /'
    grep -E "^quantize \(" "$out/quantize_$name.log" | tail -1 |
      awk '{for (i = 1; i <= NF; ++i) if ($i ~ /^[0-9]+\/[0-9]+$/) { split($i, d, "/"); e = $(i + 1); sub("s", "", e);
             printf "   %s layers in %.1f s: %.2f s/layer (x28: %.0f s)\n", $i, e, e / d[1], 28 * e / d[1]; exit }}'
    grep -E "mean over all linears|error|Error" "$out/quantize_$name.log" | grep -v "rel err" | tail -2 | sed 's/^/   /'
    rm -rf "$tmp/out_$name"
  done
  rm -rf "$tmp"
  return $status
}

case "${1:-}" in
  pack) pack ;;
  run) run ;;
  w4a16) w4a16 ;;
  quantize) quantize_timing ;;
  profile) profile ;;
  ragged) ragged ;;
  paths) paths ;;
  decode) decode_table ;;
  tests) tests_only ;;
  *) echo "usage: tools/gpu_test.sh pack|run|tests|w4a16|quantize|profile|ragged|paths|decode" >&2; exit 2 ;;
esac
