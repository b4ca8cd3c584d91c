#!/usr/bin/env bash
# tools/gpu_check.sh -- fastgen's first contact with a GPU, as ONE bounded command (`make gpu-check`).
#
# Adapted from the shared ../shared/tools/gpu_check.sh for this tree: several extension modules
# (fastgen/_C*.so and fastgen/_cpu_{default,avx2,avx512}*.so), the kernel ops named _<op>, the bench
# modes fwd / fwd-grad / bwd / full, and a bench that refuses an old results CSV in its --out.
#
# Run from the repository root on a GPU machine (PY = the CUDA torch installed there, python3):
#     make gpu-check                              # = PY=python3 bash tools/gpu_check.sh
#     OUT=/some/dir BUDGET_S=420 bash tools/gpu_check.sh
# Phases, in order of value per second; each is time-boxed inside BUDGET_S and reported:
#   env        GPU / driver / python / torch / triton facts
#   build      the carried prebuilt extensions in .prebuilt/ (see `prebuild` below) when their
#              BUILD_INFO matches this python, torch and GPU, else a build: FASTGEN_CUDA=1
#              TORCH_CUDA_ARCH_LIST=<the GPU's, 9.0 by default> MAX_JOBS=<all cores>, the CPU
#              kernels only at the SIMD level this CPU runs (FASTGEN_CPU_ISAS)
#   smoke      every op once, fwd+bwd, against the reference: CUDA C++ backend 2 dtypes x 2 shapes,
#              Triton float32 x 2 shapes (one config); Triton's first call with its real autotuner;
#              a CUDA-graph replay per backend (fresh noise per replay)
#   cuda       tests/cuda (CUDA C++ kernels, the noise stream across backends, CUDA graphs);
#              the >2^31-element tests last and alone (cuda_2g)
#   ops        CUDA-parametrised op tests, auto backend       (-m "cuda and not triton")
#   kernels    tests/kernels, Triton compiled for the GPU
#   ops_triton CUDA-parametrised op tests, triton backend     (-m "cuda and triton")
#   bench      shortened sweep: eager vs fastgen-cuda (ops), clipping + training steps, then
#              eager vs fastgen-triton (real autotuning), then every provider with torch.compile
#              at 32M elements (bench_compile), as the budget allows
#   ncu        Nsight Compute sections of the CUDA forward kernels (tools/gpu_profile_ops.py)
# Without a GPU (torch.cuda.is_available() false) the GPU phases are skipped cleanly.
#
# Triton in the test phases: by default (TRITON_TEST_CONFIGS=hash) a pytest plugin gives every
# (kernel, autotune key) ONE of its configs, chosen by a stable hash, without benchmarking: each key
# compiles once instead of 4 times and every config is still exercised across the suite.
# TRITON_TEST_CONFIGS=autotune runs the kernels' real autotuner in the tests too.
#
# Results in $OUT (default ./gpu_check_out; this script's files there from an earlier run are
# removed first), at most 8 files:
#   summary.md env_build.log smoke.log tests_cuda.log tests_ops.log tests_triton.log bench.csv bench.md
#   and, when KEEP_TRITON_CACHE=1 and it is <= 15 MiB, triton_cache.tgz (smoke.log then moves into
#   env_build.log). Untar it into ./.triton_cache for a later run on the same GPU kind:
#   TRITON_CACHE_DIR points there and TRITON_CACHE_AUTOTUNING=1, so nothing is compiled twice.
# The summary table is printed last.
#
# Knobs: OUT (./gpu_check_out), BUDGET_S (450: the whole run, wall seconds; the device machine
#   allows 8 minutes), PHASES (all), PY (python3), WORKERS (pytest-xdist workers, 12; 0 = serial),
#   TEST_TIMEOUT (120 s per test), TRITON_TEST_CONFIGS (hash|autotune), KEEP_TRITON_CACHE (1),
#   BENCH_SIZES, BENCH_TRITON_SIZES, BENCH_COMPILE_SIZES, BENCH_COMPILE_CAP (150 s),
#   BENCH_PARTS (bench_cuda,bench_clip_steps,bench_triton,bench_compile), BENCH_OPS (the op sweeps' --ops),
#   BENCH_COMPILE_ARGS (more arguments of the compile part, last: "--ops gaussian_kl --event-dims 0"), MAX_JOBS (nproc), TORCH_CUDA_ARCH_LIST, BUILD_S (330: the build's cap).
#   Dry runs without a GPU: FORCE_GPU_PHASES=1 runs the GPU phases anyway (their tests skip
#   themselves; the smoke runs the CPU backend) and BENCH_DEVICE=cpu points the bench at the CPU;
#   the build then compiles the CUDA kernels too where torch has CUDA and nvcc is found.
#
# `bash tools/gpu_check.sh prebuild` builds the extensions with PY's (CUDA) torch into .prebuilt/
# (not fastgen/, so a CPU build in the same checkout is left alone) and writes .prebuilt/BUILD_INFO;
# carry .prebuilt to the GPU machine and the build phase takes seconds instead of minutes.

set -uo pipefail

T0=$(date +%s)
ROOT=$(pwd)
PY=${PY:-python3}
NPROC=$(nproc)
MAX_JOBS=${MAX_JOBS:-$NPROC}
export MAX_JOBS

if [[ ! -f setup.py || ! -d csrc || ! -d fastgen ]]; then
  echo "gpu_check.sh: run me from the fastgen repository root (no setup.py/csrc in $ROOT)" >&2
  exit 2
fi

# The extension modules setup.py builds: the op layer (+ CUDA kernels) and the CPU kernels per SIMD level.
ext_modules() {
  echo _C _cpu_default
  case "$(uname -m)" in x86_64|amd64) echo _cpu_avx2 _cpu_avx512 ;; esac
}
EXT_SUFFIX=$("$PY" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')

# BUILD_INFO: key=value lines describing where extensions were built (compared before a prebuilt is used).
build_info() {
  "$PY" - "$@" <<'EOF'
import os, sys, sysconfig, torch
print(f"python={sys.version.split()[0]}")
print(f"ext_suffix={sysconfig.get_config_var('EXT_SUFFIX')}")
print(f"torch={torch.__version__}")
print(f"torch_git={torch.version.git_version}")
print(f"cuda={torch.version.cuda}")
print(f"cxx11abi={int(torch._C._GLIBCXX_USE_CXX11_ABI)}")
print(f"cuda_arch_list={os.environ.get('TORCH_CUDA_ARCH_LIST', '')}")
print(f"modules={' '.join(sys.argv[1:])}")
EOF
}

if [[ "${1:-}" == prebuild ]]; then
  # Build into .prebuilt/ with PY's torch, CUDA kernels included, for the GPU machine.
  export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
  rm -rf .prebuilt build/prebuilt && mkdir -p .prebuilt
  echo "prebuild: FASTGEN_CUDA=1 TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST MAX_JOBS=$MAX_JOBS $PY setup.py build_ext"
  TIMEFORMAT='prebuild: %R s wall, %U s user + %S s sys CPU'
  time FASTGEN_CUDA=1 "$PY" setup.py -q build_ext --build-lib build/prebuilt/lib --build-temp build/prebuilt/temp \
    || { echo "prebuild: the build failed" >&2; exit 1; }
  mods=()
  for m in $(ext_modules); do
    cp "build/prebuilt/lib/fastgen/$m$EXT_SUFFIX" .prebuilt/ || exit 1
    mods+=("$m$EXT_SUFFIX")
  done
  build_info "${mods[@]}" > .prebuilt/BUILD_INFO
  ls -la .prebuilt; cat .prebuilt/BUILD_INFO
  exit 0
fi

BUDGET_S=${BUDGET_S:-450}
WORKERS=${WORKERS:-12}
TEST_TIMEOUT=${TEST_TIMEOUT:-120}
TRITON_TEST_CONFIGS=${TRITON_TEST_CONFIGS:-hash}
KEEP_TRITON_CACHE=${KEEP_TRITON_CACHE:-1}
PHASES=${PHASES:-env,build,smoke,cuda,ops,kernels,ops_triton,bench,ncu}
OUT=${OUT:-$ROOT/gpu_check_out}
RESULT_FILES=(summary.md env_build.log smoke.log tests_cuda.log tests_ops.log tests_triton.log bench.csv bench.md
              triton_cache.tgz)
mkdir -p "$OUT"
for f in "${RESULT_FILES[@]}"; do rm -f "$OUT/$f"; done  # an earlier run's results: never mixed in
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
ENVLOG=$OUT/env_build.log
SUMMARY=$OUT/summary.md
SMOKELOG=$OUT/smoke.log
: > "$ENVLOG"

export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1
export TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-$ROOT/.triton_cache}
export TRITON_CACHE_AUTOTUNING=${TRITON_CACHE_AUTOTUNING:-1}
export TORCHINDUCTOR_COMPILE_THREADS=${TORCHINDUCTOR_COMPILE_THREADS:-1}  # the xdist workers are the parallelism
export PYTHONPATH=$ROOT:$WORK${PYTHONPATH:+:$PYTHONPATH}
mkdir -p "$TRITON_CACHE_DIR"

declare -a ROWS=()
log() { printf '[%4ss] %s\n' "$(( $(date +%s) - T0 ))" "$*" | tee -a "$ENVLOG"; }
elapsed() { echo $(( $(date +%s) - T0 )); }
remaining() { echo $(( BUDGET_S - $(elapsed) )); }
want() { [[ ",$PHASES," == *",$1,"* ]]; }
row() { ROWS+=("| $1 | $2 | $3 | $4 | $5 | $6 | $7 | $8 |"); }  # phase status passed failed errors skipped s note

# Seconds for a phase: min(cap, left - 15 s kept for the summary); 0 (skip) under `min`.
slot() {
  local cap=$1 min=$2 left
  left=$(( $(remaining) - 15 ))
  if (( left < min )); then echo 0; elif (( left < cap )); then echo "$left"; else echo "$cap"; fi
}

# pytest counts from one phase's own log: its closing line, else its progress characters.
pytest_counts() {  # file -> "passed failed errors skipped"
  local f=$1 line prog
  line=$(grep -E '(passed|failed|skipped|errors?|deselected|no tests ran).* in [0-9.]+s' "$f" | tail -1)
  if [[ -n "$line" ]]; then
    num() { grep -oE "[0-9]+ $1" <<<"$line" | grep -oE '^[0-9]+' || echo 0; }
    echo "$(num passed) $(num failed) $(num 'errors?') $(num skipped)"
  else
    prog=$(grep -E '^[.FEsxX]+ *(\[ *[0-9]+%\])?$' "$f" | sed -E 's/ *\[ *[0-9]+%\]$//' | tr -d '\n')
    echo "$(tr -cd '.' <<<"$prog" | wc -c) $(tr -cd 'F' <<<"$prog" | wc -c) $(tr -cd 'E' <<<"$prog" | wc -c) $(tr -cd 's' <<<"$prog" | wc -c)"
  fi
}

HAVE_GPU=0; HAVE_XDIST=0; HAVE_TIMEOUT_PLUGIN=0
XDIST_ARGS=(); TIMEOUT_ARGS=()

# run_pytest PHASE OUTLOG CAP MIN NOTE ARGS...   (the phase's log is appended to OUTLOG)
run_pytest() {
  local phase=$1 outlog=$2 cap=$3 min=$4 note=$5; shift 5
  local t rc start secs status p fl e s plog=$WORK/$phase.log
  t=$(slot "$cap" "$min")
  if (( t == 0 )); then row "$phase" "skipped (budget)" - - - - 0 "needs >= ${min}s, $(remaining)s left"; return; fi
  start=$(date +%s)
  echo "## $phase: $PY -m pytest $* (limit ${t}s)" > "$plog"
  timeout -k 15 "$t" "$PY" -m pytest -q -rfE --tb=short -p no:cacheprovider --durations=15 "$@" >> "$plog" 2>&1
  rc=$?
  secs=$(( $(date +%s) - start ))
  read -r p fl e s <<<"$(pytest_counts "$plog")"
  status=pass
  if (( rc == 124 || rc == 137 )); then status=TIMEOUT; note="killed at ${t}s, counts from progress; $note"
  elif (( rc == 5 )); then status="no tests"
  elif (( rc != 0 )); then status="FAIL (rc=$rc)"; fi
  cat "$plog" >> "$outlog"; echo >> "$outlog"
  row "$phase" "$status" "$p" "$fl" "$e" "$s" "$secs" "$note"
  log "$phase: $status passed=$p failed=$fl errors=$e skipped=$s in ${secs}s"
}

# ------------------------------------------------------------------------------------ env
log "gpu_check.sh in $ROOT: budget ${BUDGET_S}s, phases $PHASES, out $OUT, $NPROC cores"
{
  echo "## env"; date -u; uname -a; echo "nproc $NPROC"; free -g | head -2
  grep -m1 'model name' /proc/cpuinfo; grep -o -m1 -E 'avx512f|avx2' /proc/cpuinfo | sort -u | tr '\n' ' '; echo
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem,compute_cap --format=csv
  else echo "no nvidia-smi"; fi
  command -v nvcc >/dev/null && nvcc --version | tail -2 || echo "no nvcc on PATH"
  "$PY" - <<'EOF'
import importlib.util, sys, torch
print("python", sys.version.split()[0], sys.executable)
print("torch", torch.__version__, "git", torch.version.git_version, "cuda", torch.version.cuda,
      "cxx11abi", int(torch._C._GLIBCXX_USE_CXX11_ABI), "cpu", torch.backends.cpu.get_cpu_capability())
print("cuda available", torch.cuda.is_available())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("device", p.name, f"cc {p.major}.{p.minor}", "SMs", p.multi_processor_count,
          "mem GiB", round(p.total_memory / 2**30, 1), "L2 MiB", round(getattr(p, "L2_cache_size", 0) / 2**20, 1))
try:
    import triton; print("triton", triton.__version__)
except Exception as e:
    print("triton missing:", e)
import numpy; print("numpy", numpy.__version__)
for m in ("xdist", "pytest_timeout", "pytest_benchmark", "sklearn", "matplotlib", "tqdm", "setuptools", "wheel", "ninja"):
    print(f"  {m}: {'yes' if importlib.util.find_spec(m) else 'NO'}")
EOF
} >> "$ENVLOG" 2>&1
HAVE_GPU=$("$PY" -c 'import torch; print(int(torch.cuda.is_available()))' 2>/dev/null || echo 0)
"$PY" -c 'import xdist' 2>/dev/null && HAVE_XDIST=1
"$PY" -c 'import pytest_timeout' 2>/dev/null && HAVE_TIMEOUT_PLUGIN=1
if (( HAVE_XDIST && WORKERS > 0 )); then XDIST_ARGS=(-n "$WORKERS"); fi
if (( HAVE_TIMEOUT_PLUGIN )); then TIMEOUT_ARGS=(--timeout "$TEST_TIMEOUT" --timeout-method signal); fi
if (( ${#XDIST_ARGS[@]} )); then export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}; fi
log "gpu=$HAVE_GPU xdist=$HAVE_XDIST (${XDIST_ARGS[*]:-serial}) pytest-timeout=$HAVE_TIMEOUT_PLUGIN triton-test-configs=$TRITON_TEST_CONFIGS"
row env ok - - - - "$(elapsed)" "gpu=$HAVE_GPU xdist=$HAVE_XDIST timeout-plugin=$HAVE_TIMEOUT_PLUGIN"

# The GPU's architecture for the build (9.0 when none is visible).
if [[ -z "${TORCH_CUDA_ARCH_LIST:-}" ]]; then
  TORCH_CUDA_ARCH_LIST=9.0
  if [[ "$HAVE_GPU" == 1 ]]; then
    TORCH_CUDA_ARCH_LIST=$("$PY" -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())' 2>/dev/null || echo 9.0)
  fi
fi
export TORCH_CUDA_ARCH_LIST

# The Triton config plugin of the test phases (see the header).
cat > "$WORK/gpucheck_triton_configs.py" <<'EOF'
"""pytest plugin: each (kernel, autotune key) runs ONE of its configs, picked by a stable hash;
no benchmarking, so a key compiles once. Loaded by gpu_check.sh when TRITON_TEST_CONFIGS=hash.
fastgen's capture-safe autotuner (kernels/_tiles.py) calls the class's run, so this patch applies to it."""
import zlib


def pytest_configure(config):
    try:
        from triton.runtime import autotuner
    except ImportError:
        return
    original = autotuner.Autotuner.run

    def run(self, *args, **kwargs):
        if len(self.configs) <= 1:
            return original(self, *args, **kwargs)
        nargs = dict(zip(self.arg_names, args))
        every = {**nargs, **kwargs}
        key = [every[k] for k in self.keys if k in every]
        key += [str(a.dtype) for a in every.values() if hasattr(a, "dtype")]
        config = self.configs[zlib.crc32(repr((self.base_fn.__name__, key)).encode()) % len(self.configs)]
        self.best_config = config
        if config.pre_hook is not None:
            config.pre_hook({**nargs, **kwargs, **config.all_kwargs()})
        return self.fn.run(*args, **kwargs, **config.all_kwargs())

    autotuner.Autotuner.run = run
EOF
TRITON_PLUGIN_ARGS=()
if [[ "$TRITON_TEST_CONFIGS" == hash ]]; then TRITON_PLUGIN_ARGS=(-p gpucheck_triton_configs); fi

# ---------------------------------------------------------------------------------- build
# What the import of fastgen found: "ok <CUDA kernels 0|1> <CPU ISA> <modules>" or "error <message>".
ext_status() {
  "$PY" - <<'EOF' 2>/dev/null || echo "error python-crashed"
import os, sys, warnings
warnings.simplefilter("ignore")
import torch
try:
    import fastgen
    from fastgen.ops import _common
    import fastgen.kernels  # noqa: F401  (installed as fastgen.kernels: pip -e or the symlink)
except Exception as e:
    print("error", repr(e)[:300].replace("\n", " ")); raise SystemExit
for module in (fastgen, fastgen.kernels):
    if not os.path.realpath(module.__file__).startswith(os.path.realpath(os.getcwd()) + os.sep):
        print("error", module.__name__, "imported from", module.__file__, "not from this tree"); raise SystemExit
if _common.EXTENSION_ERROR is not None:
    print("error", repr(_common.EXTENSION_ERROR)[:300].replace("\n", " ")); raise SystemExit
cuda = int(torch._C._dispatch_has_kernel_for_dispatch_key("fastgen::_gaussian_kl", "CUDA"))
mods = sorted(os.path.basename(m.__file__) for n, m in sys.modules.items()
              if n.startswith(("fastgen._C", "fastgen._cpu_")) and getattr(m, "__file__", None))
print("ok", cuda, _common.CPU_ISA, ",".join(mods))
EOF
}

if want build; then
  start=$(date +%s); note=""; status=ok
  echo "## build" >> "$ENVLOG"
  # fastgen.kernels is kernels/ through setup.py's package_dir, which PYTHONPATH alone does not
  # know; an editable install elsewhere may even map it to another checkout. Nothing is installed
  # (PY's site-packages stay as they are): a symlink fastgen/kernels -> ../kernels (gitignored)
  # makes this tree's kernels the ones imported, unless they already are.
  if ! "$PY" -c 'import os, sys, fastgen.kernels as k; sys.exit(os.path.realpath(k.__file__) != os.path.realpath(sys.argv[1]))' \
       "$ROOT/kernels/__init__.py" >/dev/null 2>&1; then
    [[ -e fastgen/kernels || -L fastgen/kernels ]] || ln -s ../kernels fastgen/kernels
    log "build: symlinked fastgen/kernels -> ../kernels (fastgen.kernels was not this tree's kernels/)"
  fi
  rebuild=1
  # A prebuilt set in .prebuilt/: every module setup.py builds, and a BUILD_INFO that matches here.
  if [[ -f .prebuilt/BUILD_INFO ]]; then
    "$PY" - .prebuilt/BUILD_INFO "$WORK/prebuilt_bad" "$HAVE_GPU" $(ext_modules) >> "$ENVLOG" 2>&1 <<'EOF'
import os, sys, sysconfig, torch
path, bad_path, have_gpu, modules = sys.argv[1], sys.argv[2], sys.argv[3] == "1", sys.argv[4:]
info = dict(line.strip().split("=", 1) for line in open(path) if "=" in line)
suffix = sysconfig.get_config_var("EXT_SUFFIX")
here = {"ext_suffix": suffix, "torch": torch.__version__, "torch_git": torch.version.git_version,
        "cuda": str(torch.version.cuda), "cxx11abi": str(int(torch._C._GLIBCXX_USE_CXX11_ABI))}
bad = [f"{k}: built {info.get(k)}, here {v}" for k, v in here.items() if info.get(k) != v]
built = info.get("modules", "").split()
bad += [f"module {m}{suffix} missing" for m in modules
        if f"{m}{suffix}" not in built or not os.path.exists(os.path.join(os.path.dirname(path), f"{m}{suffix}"))]
if have_gpu:
    cap = "%d.%d" % torch.cuda.get_device_capability()
    archs = info.get("cuda_arch_list", "").replace(";", " ").replace(",", " ").split()
    if not any(a.split("+")[0] == cap for a in archs):
        bad.append(f"built for CUDA archs {archs}, this GPU is {cap}")
print("prebuilt BUILD_INFO:", info, "| mismatches:", bad or "none")
open(bad_path, "w").write("; ".join(bad))
EOF
    if [[ -s "$WORK/prebuilt_bad" ]]; then
      note="prebuilt mismatch: $(cat "$WORK/prebuilt_bad")"
    else
      mkdir -p "$WORK/displaced"
      for m in $(ext_modules); do
        [[ -f "fastgen/$m$EXT_SUFFIX" ]] && mv "fastgen/$m$EXT_SUFFIX" "$WORK/displaced/"
        cp ".prebuilt/$m$EXT_SUFFIX" fastgen/
      done
      read -r st cuda_k isa mods <<<"$(ext_status)"
      if [[ "$st" == ok && ( "$cuda_k" == 1 || "$HAVE_GPU" == 0 ) ]]; then
        rebuild=0; note="prebuilt ($mods; $(du -ch .prebuilt/*.so | tail -1 | cut -f1)), CUDA kernels=$cuda_k, CPU ISA $isa"
      else
        note="prebuilt did not load: $st $cuda_k"
        for m in $(ext_modules); do rm -f "fastgen/$m$EXT_SUFFIX"; done
        mv "$WORK/displaced/"* fastgen/ 2>/dev/null
      fi
    fi
    log "build: $note"
  fi
  if (( rebuild )); then
    # On a GPU the CUDA kernels are required; elsewhere they are built where torch has CUDA and nvcc is found.
    cuda_flag=auto; [[ "$HAVE_GPU" == 1 ]] && cuda_flag=1
    # The CPU kernels at the one SIMD level this CPU runs (the one fastgen loads here): each level
    # is as much compile work as the CUDA extension's op layer, and the GPU phases need one.
    isa=$("$PY" -c 'import torch; c = torch.backends.cpu.get_cpu_capability(); print("avx512" if c.startswith("AVX512") else "avx2" if c == "AVX2" else "default")' 2>/dev/null || echo default)
    [[ " $(ext_modules) " == *" _cpu_$isa "* ]] || isa=default
    export FASTGEN_CPU_ISAS=${FASTGEN_CPU_ISAS:-$isa}
    t=$(slot "${BUILD_S:-330}" 60)
    if (( t > 0 )); then
      log "build: compiling (FASTGEN_CUDA=$cuda_flag FASTGEN_CPU_ISAS=$FASTGEN_CPU_ISAS MAX_JOBS=$MAX_JOBS TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST, limit ${t}s)"
      TIMEFORMAT='%R %U %S'
      # bash's `time`: wall and CPU seconds of the build and every compiler it waited for.
      { time FASTGEN_CUDA=$cuda_flag timeout -k 15 "$t" "$PY" setup.py build_ext --inplace > "$WORK/build_output" 2>&1 ; } 2> "$WORK/build_time"
      rc=$?
      # The compilers' output is megabytes of warnings: its error lines and its end are kept.
      { echo "## build output: $(wc -l < "$WORK/build_output") lines, $(grep -c -i 'warning' "$WORK/build_output") with 'warning'; error lines and the last 40"
        grep -E -i '(^|[^a-z_-])error([^a-z_]|$)' "$WORK/build_output" | grep -v -E 'Werror|error_|_error' | head -60
        echo "..."; tail -40 "$WORK/build_output"; } >> "$ENVLOG"
      read -r wall user sys <<<"$(tail -1 "$WORK/build_time")"
      cpu=$(awk -v u="$user" -v s="$sys" 'BEGIN { printf "%.0f", u + s }')
      note="built in ${wall%.*}s wall, ${cpu} CPU-s, $MAX_JOBS jobs, rc=$rc (FASTGEN_CUDA=$cuda_flag, CPU kernels $FASTGEN_CPU_ISAS)${note:+; $note}"
      (( rc != 0 )) && status=FAIL
      # Per extension: compile jobs, their summed and longest seconds (ninja's log), for build-time estimates.
      for d in build/temp.*/fastgen.*; do
        [[ -f "$d/.ninja_log" ]] || continue
        awk -v ext="$(basename "$d")" 'NR > 1 { n++; s = ($2 - $1) / 1000; sum += s; if (s > mx) mx = s }
          END { if (n) printf "build: %s: %d jobs, %.0f s summed, longest %.0f s\n", ext, n, sum, mx }' "$d/.ninja_log"
      done | tee -a "$ENVLOG" > "$WORK/ninja_summary"
    else
      status="skipped (budget)"
    fi
  fi
  read -r st cuda_k isa mods <<<"$(ext_status)"
  if [[ "$st" != ok ]]; then status=FAIL; note="$note; import: $st $cuda_k $isa $mods"
  elif [[ "$cuda_k" != 1 && "$HAVE_GPU" == 1 ]]; then status=FAIL; note="$note; no CUDA kernels registered"
  else note="$note; loaded $mods, CPU ISA $isa, CUDA kernels=$cuda_k"; fi
  row build "$status" - - - - "$(( $(date +%s) - start ))" "$note"
  log "build: $status ($note)"
fi

gpu_phase() {  # a GPU phase without a GPU: one row, skipped
  if [[ "$HAVE_GPU" != 1 && "${FORCE_GPU_PHASES:-0}" != 1 ]]; then row "$1" "skipped (no GPU)" - - - - 0 ""; return 1; fi
  return 0
}

# ---------------------------------------------------------------------------------- smoke
if want smoke && gpu_phase smoke; then
  t=$(slot 120 30); start=$(date +%s)
  if (( t == 0 )); then row smoke "skipped (budget)" - - - - 0 ""; else
  timeout -k 10 "$t" "$PY" - > "$SMOKELOG" 2>&1 <<'EOF'
import time, traceback
import torch
import fastgen
from fastgen import reference
backends = fastgen.available_backends()
dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # cpu: a dry run
print("device", dev, "backends", backends, flush=True)
results = {"ok": 0, "FAIL": 0}

def sync():
    if dev.type == "cuda":
        torch.cuda.synchronize()

def check(name, fn):
    t0 = time.perf_counter()
    try:
        fn(); sync(); status = "ok"
    except Exception:
        status = "FAIL"
    results[status] += 1
    print(f"{status:4s} {time.perf_counter() - t0:7.2f}s {name}", flush=True)
    if status == "FAIL":
        print(traceback.format_exc(limit=4), flush=True)

def close(actual, expected, rtol):
    scale = expected.detach().float().abs().max().item() + 1.0
    torch.testing.assert_close(actual.detach().float(), expected.detach().float(), rtol=rtol, atol=rtol * scale)

def op_checks(backend, dtype, B, D):
    rtol = 1e-4 if dtype == torch.float32 else 2e-2
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(B, D, generator=g).to(dev, dtype).requires_grad_()
    lv = (0.5 * torch.randn(B, D, generator=g)).to(dev, dtype).requires_grad_()
    x = torch.rand(B, D, generator=g).to(dev, dtype)
    pm, plv = (0.1 * mu[0]).detach(), (0.1 * lv[0]).detach()

    def rep():
        gen = torch.Generator(dev).manual_seed(3)
        z = fastgen.reparameterize(mu, lv, generator=gen); z.float().sum().backward()
        with fastgen.use_backend("reference"):
            expected = fastgen.reparameterize(mu, lv, generator=torch.Generator(dev).manual_seed(3))
        close(z, expected, rtol)
        assert torch.isfinite(lv.grad).all()

    def repkl():
        z, kl = fastgen.reparameterize_kl(mu, lv, num_samples=2); (z.float().sum() + kl.float().sum()).backward()
        close(kl, reference.gaussian_kl(mu, lv), rtol)

    def kl():
        out = fastgen.gaussian_kl(mu, lv, pm, plv); out.float().sum().backward()
        close(out, reference.gaussian_kl(mu, lv, pm, plv), rtol)

    def bern():
        out = fastgen.bernoulli_log_likelihood(mu, x); out.float().sum().backward()
        close(out, reference.bernoulli_log_likelihood(mu, x), rtol)

    def gll():
        out = fastgen.gaussian_log_likelihood(x, mu, lv); out.float().sum().backward()
        close(out, reference.gaussian_log_likelihood(x, mu, lv), rtol)

    def logw():
        gen = torch.Generator(dev).manual_seed(5)
        z, w = fastgen.reparameterize_log_weights(mu, lv, num_samples=3, generator=gen, prior_mu=pm, prior_logvar=plv)
        (z.float().sum() + w.float().sum()).backward()
        _, expected = reference.reparameterize_log_weights(mu, lv, num_samples=3, prior_mu=pm, prior_logvar=plv,
                                                           generator=torch.Generator(dev).manual_seed(5))
        close(w, expected, 10 * rtol)

    def gnp():
        out = fastgen.grad_norm_penalty(mu, center=1.0); out.float().sum().backward()
        close(out, reference.grad_norm_penalty(mu, center=1.0), rtol)

    def gp():  # WGAN-GP: random_interpolate's kernel, the critic's gradient, grad_norm_penalty
        weight = torch.linspace(-1, 1, D, device=dev, dtype=dtype)
        critic = lambda t: torch.tanh(t * weight).sum(-1)  # noqa: E731
        real, fake = mu.detach(), x.flip(0)
        out = fastgen.gradient_penalty(critic, real, fake, generator=torch.Generator(dev).manual_seed(9))
        expected = reference.gradient_penalty(critic, real, fake, generator=torch.Generator(dev).manual_seed(9))
        close(out, expected, 10 * rtol)

    def clamp():
        ts = [mu.detach().clone(), lv.detach().clone()[1:]]  # the second starts off 16-byte alignment
        expected = [t.clamp(-0.5, 0.5) for t in ts]
        fastgen.clamp_(ts, -0.5, 0.5)
        assert all(torch.equal(t, e) for t, e in zip(ts, expected))

    for name, fn in (("reparameterize", rep), ("reparameterize_kl", repkl), ("gaussian_kl", kl),
                     ("bernoulli_log_likelihood", bern), ("gaussian_log_likelihood", gll),
                     ("reparameterize_log_weights", logw), ("grad_norm_penalty", gnp),
                     ("gradient_penalty", gp), ("clamp_", clamp)):
        mu.grad = lv.grad = None
        with fastgen.use_backend(backend):
            check(f"{name:26s} {backend:6s} {str(dtype)[6:]:8s} {B}x{D}", fn)

def graph(backend):
    def run():
        m = torch.randn(64, 32, device=dev); l = torch.zeros(64, 32, device=dev)
        with fastgen.use_backend(backend):
            s = torch.cuda.Stream(); s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s):
                for _ in range(2):
                    fastgen.reparameterize_kl(m, l, num_samples=2)
            torch.cuda.current_stream().wait_stream(s)
            gr = torch.cuda.CUDAGraph()
            with torch.cuda.graph(gr):
                z, _ = fastgen.reparameterize_kl(m, l, num_samples=2)
        gr.replay(); a = z.clone(); gr.replay(); b = z.clone()
        assert not torch.equal(a, b), "two replays drew the same noise"
    check(f"cuda-graph replay reparameterize_kl {backend}", run)

op_backends = [b for b in (("cuda", "triton") if dev.type == "cuda" else ("cpu",)) if b in backends]
if "triton" in op_backends:
    # The real autotuner: the first call compiles and benchmarks every config (forward + backward).
    mu = torch.randn(4096, 1024, device=dev, requires_grad=True); lv = torch.zeros_like(mu, requires_grad=True)
    def trit():
        with fastgen.use_backend("triton"):
            fastgen.reparameterize(mu, lv).sum().backward()
    check("triton reparameterize fp32 4096x1024 first call (compile + autotune)", trit)
    check("triton reparameterize fp32 4096x1024 second call", trit)
for backend in op_backends:
    if backend == "triton":
        # Every (kernel, specialization) compiles once per config: the op checks run the first
        # config alone (the test phases spread the configs); float32 only.
        from triton.runtime import autotuner
        autotuner.Autotuner.run = lambda self, *a, **k: self.fn.run(*a, **k, **self.configs[0].all_kwargs())
    for dtype in (torch.float32,) if backend == "triton" else (torch.float32, torch.bfloat16):
        for B, D in ((128, 20), (4096, 1024)):
            op_checks(backend, dtype, B, D)
    if dev.type == "cuda":
        graph(backend)
print(f"smoke: {results['ok']} ok, {results['FAIL']} failed")
EOF
  rc=$?; secs=$(( $(date +%s) - start ))
  okn=$(grep -c '^ok ' "$SMOKELOG" || true); badn=$(grep -c '^FAIL' "$SMOKELOG" || true)
  st=pass
  if (( rc == 124 || rc == 137 )); then st=TIMEOUT; elif (( rc != 0 )); then st="FAIL (rc=$rc)"; fi
  (( badn > 0 )) && st=FAIL
  row smoke "$st" "$okn" "$badn" - - "$secs" "$(head -1 "$SMOKELOG" | cut -c1-60)$(grep -m1 'first call' "$SMOKELOG" | awk '{print "; triton first call " $2}')"
  log "smoke: $st ok=$okn failed=$badn in ${secs}s"
  fi
fi

# ---------------------------------------------------------------------------------- tests
# tests/cuda/test_kernel_compile.py needs nvcc, not a GPU: `make test` runs it anywhere.
if want cuda && gpu_phase cuda; then
  run_pytest cuda "$OUT/tests_cuda.log" 150 40 "CUDA C++ kernels, noise across backends" tests/cuda \
    --ignore=tests/cuda/test_kernel_compile.py -k "not beyond_2_31" "${TRITON_PLUGIN_ARGS[@]}" "${XDIST_ARGS[@]}" \
    "${TIMEOUT_ARGS[@]}"
  run_pytest cuda_2g "$OUT/tests_cuda.log" 90 30 ">2^31 elements, alone" tests/cuda/test_cuda_backend.py \
    -k "beyond_2_31" "${TIMEOUT_ARGS[@]}"
fi
if want ops && gpu_phase ops; then
  run_pytest ops "$OUT/tests_ops.log" 120 30 "auto backend on CUDA" tests --ignore=tests/cuda --ignore=tests/kernels \
    -m "cuda and not triton" "${XDIST_ARGS[@]}" "${TIMEOUT_ARGS[@]}"
fi
if want kernels && gpu_phase kernels; then
  run_pytest kernels "$OUT/tests_triton.log" 150 45 "triton configs: $TRITON_TEST_CONFIGS" tests/kernels \
    "${TRITON_PLUGIN_ARGS[@]}" "${XDIST_ARGS[@]}" "${TIMEOUT_ARGS[@]}"
fi
if want ops_triton && gpu_phase ops_triton; then
  run_pytest ops_triton "$OUT/tests_triton.log" 120 45 "triton configs: $TRITON_TEST_CONFIGS" tests \
    --ignore=tests/cuda --ignore=tests/kernels -m "cuda and triton" \
    "${TRITON_PLUGIN_ARGS[@]}" "${XDIST_ARGS[@]}" "${TIMEOUT_ARGS[@]}"
fi

# ---------------------------------------------------------------------------------- bench
if want bench && gpu_phase bench; then
  BDIR=$WORK/bench; mkdir -p "$BDIR"
  BENCH_DEVICE=${BENCH_DEVICE:-cuda}
  FUSED=fastgen-cuda; [[ "$BENCH_DEVICE" == cpu ]] && FUSED=fastgen-cpu
  bench_part() {  # name cap min args...   (each part its own fresh --out: python -m bench appends to a CSV there)
    local name=$1 cap=$2 min=$3; shift 3
    local t start rc n st plog=$WORK/$name.log
    if [[ ",$BENCH_PARTS," != *",$name,"* ]]; then row "$name" "not asked" - - - - 0 "BENCH_PARTS=$BENCH_PARTS"; return; fi
    t=$(slot "$cap" "$min")
    if (( t == 0 )); then row "$name" "skipped (budget)" - - - - 0 "needs >= ${min}s"; return; fi
    start=$(date +%s)
    mkdir -p "$BDIR/$name"
    echo "## $name: python -m bench $* (limit ${t}s)" > "$plog"
    timeout -k 10 "$t" "$PY" -m bench --device "$BENCH_DEVICE" --out "$BDIR/$name" --no-plots "$@" >> "$plog" 2>&1
    rc=$?
    n=$(cat "$BDIR/$name"/*.csv 2>/dev/null | tail -n +2 | wc -l)
    st=pass
    if (( rc == 124 || rc == 137 )); then st="TIMEOUT (no CSV)"; elif (( rc != 0 )); then st="FAIL (rc=$rc)"; fi
    row "$name" "$st" "$n rows" - - - "$(( $(date +%s) - start ))" \
      "$(grep -c 'differs from eager\|bench: .* failed' "$plog" || true) provider problems"
    cat "$plog" >> "$WORK/bench.log"
    log "$name: $st, $n rows"
  }
  if [[ "$BENCH_DEVICE" == cpu ]]; then SIZES=${BENCH_SIZES:-128x20,1024x1024}; else SIZES=${BENCH_SIZES:-128x20,4096x1024,32768x1024}; fi
  BENCH_PARTS=${BENCH_PARTS:-bench_cuda,bench_clip_steps,bench_triton,bench_compile}
  OPS_ARGS=(); [[ -n "${BENCH_OPS:-}" ]] && OPS_ARGS=(--ops "$BENCH_OPS")
  bench_part bench_cuda 120 30 "${OPS_ARGS[@]}" --quick --sizes "$SIZES" --dtypes float32,bfloat16 --modes fwd,full \
    --providers "eager,$FUSED" --no-clip --no-steps
  bench_part bench_clip_steps 75 25 --quick --no-ops --providers "eager,$FUSED"
  if [[ "$BENCH_DEVICE" == cuda ]]; then
    bench_part bench_triton 150 60 "${OPS_ARGS[@]}" --quick --sizes "${BENCH_TRITON_SIZES:-128x20,32768x1024}" --dtypes float32 \
      --modes fwd,full --providers eager,fastgen-triton --no-clip --no-steps
    # The torch.compile targets: every provider at 32M elements (each op compiles per mode).
    read -r -a COMPILE_ARGS <<<"${BENCH_COMPILE_ARGS:-}"
    bench_part bench_compile "${BENCH_COMPILE_CAP:-150}" 60 "${OPS_ARGS[@]}" --quick --sizes "${BENCH_COMPILE_SIZES:-32768x1024}" --dtypes float32 \
      --modes fwd,full --providers eager,compile,fastgen-cuda,fastgen-triton --no-clip --no-steps "${COMPILE_ARGS[@]}"
  else
    row bench_triton "skipped (no GPU)" - - - - 0 "Triton runs on CUDA tensors only"
  fi
  # One CSV (one header) and one markdown over all parts: the parts' own files, concatenated.
  first=1
  for part in bench_cuda bench_clip_steps bench_triton bench_compile; do  # in the order they ran
    for f in "$BDIR/$part"/*.csv; do
      [[ -f "$f" ]] || continue
      if (( first )); then cat "$f" > "$OUT/bench.csv"; first=0; else tail -n +2 "$f" >> "$OUT/bench.csv"; fi
    done
    for f in "$BDIR/$part"/*.md; do [[ -f "$f" ]] && { echo "# $part"; echo; cat "$f"; echo; } >> "$OUT/bench.md"; done
  done
  { echo "## bench"; cat "$WORK/bench.log" 2>/dev/null; } >> "$ENVLOG"
fi

# ---------------------------------------------------------------------------------- ncu
# Nsight Compute on the CUDA forward kernels at 32M float32 elements (row sums, element-wise
# row sums, the noise kernel): memory throughput against peak, achieved occupancy, registers.
if want ncu && gpu_phase ncu; then
  t=$(slot 90 30); start=$(date +%s)
  NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | tail -1)
  if (( t == 0 )); then row ncu "skipped (budget)" - - - - 0 ""
  elif [[ -z "$NCU" ]]; then row ncu "skipped (no ncu)" - - - - 0 "ncu is not on PATH"
  else
    timeout -k 10 "$t" "$NCU" --section SpeedOfLight --section MemoryWorkloadAnalysis --section Occupancy \
      --section LaunchStats --kernel-name regex:'row_sums|for_each' --launch-skip 9 --launch-count 9 \
      "$PY" tools/gpu_profile_ops.py > "$WORK/ncu.txt" 2>&1
    rc=$?; st=pass; (( rc == 0 )) || st="FAIL (rc=$rc)"
    row ncu "$st" "$(grep -c ', Context [0-9]*, Stream' "$WORK/ncu.txt" || true) kernels" - - - \
      "$(( $(date +%s) - start ))" "sections in env_build.log"
    { echo "## ncu"; cat "$WORK/ncu.txt"; } >> "$ENVLOG"
    log "ncu: $st"
  fi
fi

# --------------------------------------------------------------------------- triton cache
if [[ "$KEEP_TRITON_CACHE" == 1 && "$HAVE_GPU" == 1 ]] && [[ -n "$(ls -A "$TRITON_CACHE_DIR" 2>/dev/null)" ]]; then
  tar -C "$TRITON_CACHE_DIR" -czf "$WORK/triton_cache.tgz" . 2>/dev/null
  size=$(stat -c %s "$WORK/triton_cache.tgz" 2>/dev/null || echo 0)
  if (( size > 0 && size <= 15 * 1024 * 1024 )); then
    if [[ -f "$SMOKELOG" ]]; then { echo "## smoke"; cat "$SMOKELOG"; } >> "$ENVLOG"; rm -f "$SMOKELOG"; fi
    mv "$WORK/triton_cache.tgz" "$OUT/"
    log "triton cache: $(du -h "$OUT/triton_cache.tgz" | cut -f1) as triton_cache.tgz ($(find "$TRITON_CACHE_DIR" -type f | wc -l) files)"
  else
    log "triton cache: $(( size / 1048576 )) MiB compressed, over 15 MiB: not kept"
  fi
fi

# -------------------------------------------------------------------------------- summary
{
  echo "# fastgen gpu_check summary"
  echo
  echo "- $(date -u +%FT%TZ): $(elapsed)s of a ${BUDGET_S}s budget; gpu=$HAVE_GPU; $NPROC cores; phases $PHASES"
  grep -E '^(python|torch|device|triton|numpy) ' "$ENVLOG" | head -5 | sed 's/^/- /'
  echo
  echo "| phase | status | passed | failed | errors | skipped | s | note |"
  echo "|---|---|---|---|---|---|---|---|"
  printf '%s\n' "${ROWS[@]}"
  echo
  for f in "$OUT"/tests_*.log; do
    [[ -f "$f" ]] || continue
    n=$(grep -cE '^(FAILED|ERROR) ' "$f" || true)
    (( n > 0 )) || continue
    echo "## $(basename "$f"): $n failing (first 25)"
    echo '```'; grep -E '^(FAILED|ERROR) ' "$f" | head -25 | cut -c1-300; echo '```'
  done
  if [[ -f "$SMOKELOG" ]] && grep -q '^FAIL' "$SMOKELOG"; then
    echo "## smoke failures"; echo '```'; grep -A6 '^FAIL' "$SMOKELOG" | head -40; echo '```'
  fi
} > "$SUMMARY"
ls -la "$OUT" >> "$ENVLOG"
rm -rf "$WORK"
echo
echo "==================== fastgen gpu_check: $(elapsed)s, results in $OUT ===================="
grep -E '^(\||- )' "$SUMMARY"
