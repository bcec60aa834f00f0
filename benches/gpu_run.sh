#!/usr/bin/env bash
# One GPU run of what the README's GPU tables need, on one device: the conformance tests on that
# GPU, this crate's bench beside the PyTorch peer (eager and torch.compile, f32 and f16; the bench
# pairs the rows and judges issue 8's targets), alternating A/B runs of the kernel settings whose
# GPU defaults are not yet measured, and each kernel's time. Each stage writes its results to
# $RESULTS as soon as it ends, so a run cut short keeps what it finished; `times.txt` there gives
# each stage's seconds, for planning the next run.
#
#   benches/gpu_run.sh [STAGE...]          default: info tests peer bench settings profile
#
# Stages:
#   info      adapter list, driver, GPU clocks, this checkout's revision
#   tests     the test suites on this GPU (`cargo test --release`, or every binary in $TESTS)
#   peer      ../shared/peers/torch_ntm_ops.py at $PEER_SHAPES: eager and --compile, f32 and f16
#   bench     the bench (the full sweep, or $SHAPES) beside the peer's rows: comparison.txt, .md
#             and .csv, the report, the CSV and the plot
#   settings  $ALTERNATIONS rounds of the bench at $AB_SHAPES ($AB_DTYPES): in each, one run with the
#             defaults and one with each setting in $SETTINGS, one after another; then each
#             setting's A/B against its base (the defaults, or the setting it varies): ab_<setting>.txt
#   base      the same A/B of this build against another build's bench binary, $BASE
#   profile   each op's compute passes and kernels at $PROFILE_SHAPES (f32)
#
# Environment (all optional):
#   BENCH     this build's bench binary; default: built by `cargo bench --no-run`. A machine with
#             no Rust toolchain runs binaries built elsewhere (same target): name them here and
#             in TESTS, and carry the peer script (PEER); benches/gpu_kit.sh packs all three
#   TESTS     a folder of test binaries (`cargo test --release --no-run` lists them); run from the
#             repository root, as cargo runs them
#   PEER      the PyTorch peer script; default ../shared/peers/torch_ntm_ops.py
#   PYTHON    the Python that has PyTorch; default python3
#   RESULTS   the results folder; default target/gpu-run
#   SHAPES    the bench stage's shapes ("B,H,N,W;..."); default: the bench's full sweep
#   PEER_SHAPES  the peer's shapes; default: the peer's own list, which the README's tables use
#   AB_SHAPES, ALTERNATIONS, SETTINGS, PROFILE_SHAPES: see their defaults below; AB_FILTER:
#             the settings runs' NTM_BENCH_FILTER (default: every op); AB_DTYPES their memory
#             dtypes (default f32; f32,f16 also weighs each setting on f16 memories)
#   BUDGET_S  seconds after which no stage, and no run of the settings, starts (a device lease)
#   BASE      the other build's bench binary for the `base` stage
#   REVISION  the revision `info` records where the tree has no git history (a copied tree)
#
# The settings (each against the defaults unless named; `Gpu`'s setters document them):
#   read2       NTM_BENCH_READ_PASSES=2         the soft read's backward in two passes (GPU default 1)
#   vecs1       NTM_BENCH_STREAM_VECS=1         one V of a row per streaming thread (default 2)
#   pow2tiles   NTM_BENCH_TILES=pow2            power-of-two column tiles (default: a row's V's
#                                               exactly; differs at W = 20 of $AB_SHAPES)
#   subgroup    NTM_BENCH_ROW_SUMS=subgroup     streaming row sums by subgroup shuffles (default:
#                                               workgroup memory)
#   subgroup1   ... and NTM_BENCH_STREAM_GROUP=1, against subgroup (its GPU default of 4)
#   group1      NTM_BENCH_STREAM_GROUP=1        the several-head column partials row by row
#   ew4, ew8    NTM_BENCH_EW_ROWS=4 / 8         elementwise rows per thread (GPU default 1)
#   ew4load1    NTM_BENCH_EW_ROWS=4 NTM_BENCH_EW_GROUP=1, against ew4 (its GPU default group 4)
#   wg1024, wg16384  NTM_BENCH_REDUCTION_WG     the reductions' workgroups (GPU default 4,096)
set -u -o pipefail

# Paths given relative to the caller's folder, made absolute before the script moves to the root.
abs() { case $1 in /* | "") echo "$1" ;; *) echo "$PWD/$1" ;; esac; }
for v in BENCH TESTS PEER BASE RESULTS; do
    [ -n "${!v:-}" ] && printf -v "$v" '%s' "$(abs "${!v}")"
done
cd "$(dirname "$0")/.."
ROOT=$PWD
RESULTS=${RESULTS:-$ROOT/target/gpu-run}
PEER=${PEER:-$ROOT/../shared/peers/torch_ntm_ops.py}
PYTHON=${PYTHON:-python3}
AB_SHAPES=${AB_SHAPES:-16,1,65536,64;1,1,1048576,64;16,1,65536,20;16,4,16384,20}
ALTERNATIONS=${ALTERNATIONS:-2}
AB_DTYPES=${AB_DTYPES:-f32}
SETTINGS=${SETTINGS:-read2 vecs1 pow2tiles subgroup subgroup1 group1 ew4 ew8 ew4load1 wg1024 wg16384}
PROFILE_SHAPES=${PROFILE_SHAPES:-16,1,65536,64;1,1,1048576,64}
mkdir -p "$RESULTS"
RESULTS=$(cd "$RESULTS" && pwd)

say() { echo "== $*" | tee -a "$RESULTS/log.txt"; }

bench_bin() {
    if [ -z "${BENCH:-}" ]; then
        # The bench binary is the executable cargo names for the memory_access target.
        BENCH=$(cargo bench --no-run --message-format=json 2>/dev/null |
            sed -n 's/.*"executable":"\([^"]*memory_access[^"]*\)".*/\1/p' | tail -n 1)
        if [ -z "$BENCH" ]; then
            say "no bench binary: set BENCH, or run where cargo builds"
            return 1
        fi
    fi
}

# One bench run into its own target folder ($1), with the environment that follows.
bench_into() {
    local dir=$1
    shift
    mkdir -p "$dir"
    env CARGO_TARGET_DIR="$dir" "$@" "$BENCH" --bench >"$dir/stdout.txt" 2>&1
}

# A run's settings, as env assignments: `default` (the adapter's defaults) and each setting.
run_env() {
    case $1 in
    default) echo "" ;;
    read2) echo "NTM_BENCH_READ_PASSES=2" ;;
    vecs1) echo "NTM_BENCH_STREAM_VECS=1" ;;
    pow2tiles) echo "NTM_BENCH_TILES=pow2" ;;
    subgroup) echo "NTM_BENCH_ROW_SUMS=subgroup" ;;
    subgroup1) echo "NTM_BENCH_ROW_SUMS=subgroup NTM_BENCH_STREAM_GROUP=1" ;;
    group1) echo "NTM_BENCH_STREAM_GROUP=1" ;;
    ew4) echo "NTM_BENCH_EW_ROWS=4" ;;
    ew8) echo "NTM_BENCH_EW_ROWS=8" ;;
    ew4load1) echo "NTM_BENCH_EW_ROWS=4 NTM_BENCH_EW_GROUP=1" ;;
    wg1024) echo "NTM_BENCH_REDUCTION_WG=1024" ;;
    wg16384) echo "NTM_BENCH_REDUCTION_WG=16384" ;;
    *) return 1 ;;
    esac
}

# The run a setting is compared with: the defaults, or the setting it varies.
base_of() {
    case $1 in
    subgroup1) echo subgroup ;;
    ew4load1) echo ew4 ;;
    *) echo default ;;
    esac
}

# Whether $BUDGET_S seconds have passed since the script began (then no new run starts).
spent() {
    [ -n "${BUDGET_S:-}" ] && [ $(($(date +%s) - START)) -ge "$BUDGET_S" ]
}

# One A/B run, named $1 (its folder: runs/$1), at $AB_SHAPES, $AB_DTYPES and $AB_FILTER, with
# the environment that follows.
ab_run() {
    local name=$1
    shift
    bench_into "$RESULTS/runs/$name" NTM_BENCH_SHAPES="$AB_SHAPES" NTM_BENCH_DTYPES="$AB_DTYPES" \
        ${AB_FILTER:+NTM_BENCH_FILTER=$AB_FILTER} "$@"
}

# The CSVs of the runs named $1-<round>, as a colon-separated list.
csvs() { ls "$RESULTS"/runs/"$1"-*/ntm-bench/memory_access.csv 2>/dev/null | paste -sd: -; }

# The A/B of two sides' runs (colon-separated CSV lists), no device opened; $3 names the result.
ab_of() {
    local dir=$RESULTS/ab-$3
    mkdir -p "$dir"
    env CARGO_TARGET_DIR="$dir" NTM_BENCH_BASE="$1" NTM_BENCH_FROM="$2" "$BENCH" --bench \
        >"$dir/stdout.txt" 2>&1
    cp "$dir/ntm-bench/ab.txt" "$RESULTS/ab_$3.txt" && cp "$dir/ntm-bench/ab.csv" "$RESULTS/ab_$3.csv"
}

stage_info() {
    {
        date -u
        echo "revision: ${REVISION:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}"
        nvidia-smi 2>/dev/null || echo "no nvidia-smi"
        nvidia-smi -q -d CLOCK 2>/dev/null | sed -n '1,40p'
        vulkaninfo --summary 2>/dev/null || echo "no vulkaninfo"
        "$PYTHON" -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name(0))' 2>&1
    } >"$RESULTS/info.txt" 2>&1
    return 0
}

stage_tests() {
    local rc=0
    if [ -n "${TESTS:-}" ]; then
        for t in "$TESTS"/*; do
            [ -f "$t" ] && [ -x "$t" ] || continue
            echo "-- $(basename "$t")"
            "$t" || rc=1
        done >"$RESULTS/tests.txt" 2>&1
    else
        cargo test --release >"$RESULTS/tests.txt" 2>&1 || rc=1
    fi
    grep -E "^test result|FAILED|panicked" "$RESULTS/tests.txt" | sort | uniq -c | tee -a "$RESULTS/log.txt"
    return $rc
}

stage_peer() {
    local shapes=()
    [ -n "${PEER_SHAPES:-}" ] && shapes=(--shapes "$PEER_SHAPES")
    local rc=0
    for dtype in f32 f16; do
        "$PYTHON" "$PEER" "${shapes[@]}" --compile --dtype "$dtype" --csv "$RESULTS/torch-$dtype.csv" \
            >"$RESULTS/torch-$dtype.txt" 2>&1 || rc=1
    done
    # One CSV for the bench: the f16 run's peers are named torch-eager-f16, torch-compile-f16.
    cat "$RESULTS/torch-f32.csv" >"$RESULTS/torch.csv"
    tail -n +2 "$RESULTS/torch-f16.csv" >>"$RESULTS/torch.csv" 2>/dev/null
    return $rc
}

stage_bench() {
    bench_bin || return 1
    local dir=$RESULTS/bench peer=()
    [ -s "$RESULTS/torch.csv" ] && peer=(NTM_BENCH_PEER="$RESULTS/torch.csv")
    local shapes=()
    [ -n "${SHAPES:-}" ] && shapes=(NTM_BENCH_SHAPES="$SHAPES")
    bench_into "$dir" "${peer[@]}" "${shapes[@]}"
    local rc=$?
    cp "$dir/stdout.txt" "$RESULTS/bench.txt"
    cp "$dir"/ntm-bench/* "$RESULTS/" 2>/dev/null
    return $rc
}

stage_settings() {
    bench_bin || return 1
    local rc=0 s i r runs="default"
    for s in $SETTINGS; do
        run_env "$s" >/dev/null || { say "unknown setting $s"; rc=1; continue; }
        runs="$runs $(base_of "$s") $s"
    done
    runs=$(echo "$runs" | tr ' ' '\n' | awk '!seen[$0]++' | tr '\n' ' ')
    # Rounds of every run, one after another: drift over the stage falls on every side alike.
    for i in $(seq 1 "$ALTERNATIONS"); do
        for r in $runs; do
            if spent; then
                say "budget of $BUDGET_S s spent: no more runs (round $i, $r)"
                break 2
            fi
            # shellcheck disable=SC2046 # a list of assignments
            ab_run "$r-$i" $(run_env "$r") || rc=1
        done
    done
    for s in $SETTINGS; do
        run_env "$s" >/dev/null || continue
        local a b
        a=$(csvs "$(base_of "$s")")
        b=$(csvs "$s")
        if [ -z "$a" ] || [ -z "$b" ]; then
            say "setting $s: no runs"
            continue
        fi
        ab_of "$a" "$b" "$s" || rc=1
        say "setting $s against $(base_of "$s"): $(grep -m1 '^  soft: median' "$RESULTS/ab_$s.txt" 2>/dev/null)"
    done
    return $rc
}

stage_base() {
    bench_bin || return 1
    [ -n "${BASE:-}" ] || { say "base: set BASE to the other build's bench binary"; return 1; }
    local rc=0 i ours=$BENCH
    for i in $(seq 1 "$ALTERNATIONS"); do
        spent && { say "budget of $BUDGET_S s spent: no more runs (round $i)"; break; }
        BENCH=$BASE ab_run "other-$i" || rc=1
        BENCH=$ours ab_run "this-$i" || rc=1
    done
    ab_of "$(csvs other)" "$(csvs this)" base || rc=1
    return $rc
}

stage_profile() {
    bench_bin || return 1
    bench_into "$RESULTS/runs/profile" NTM_BENCH_SHAPES="$PROFILE_SHAPES" NTM_BENCH_DTYPES=f32 \
        NTM_PROFILE_PASSES=1 NTM_PROFILE_DISPATCHES=1
    local rc=$?
    cp "$RESULTS/runs/profile/stdout.txt" "$RESULTS/profile.txt"
    return $rc
}

START=$(date +%s)
stages=("$@")
[ ${#stages[@]} -eq 0 ] && stages=(info tests peer bench settings profile)
status=0
for st in "${stages[@]}"; do
    if ! declare -F "stage_$st" >/dev/null; then
        say "unknown stage $st"
        status=2
        continue
    fi
    if spent; then
        say "budget of $BUDGET_S s spent: stage $st not run"
        status=1
        continue
    fi
    say "stage $st"
    t0=$(date +%s)
    "stage_$st"
    rc=$?
    echo "$st $(($(date +%s) - t0)) s rc $rc" | tee -a "$RESULTS/times.txt"
    [ $rc -eq 0 ] || status=1
done
exit $status
