#!/usr/bin/env bash
# Builds the libFuzzer harnesses (fuzz/CMakeLists.txt) with clang and runs one of them.
#
#   fuzz/run.sh [OPTIONS] HARNESS SECONDS [-- LIBFUZZER_FLAGS...]
#   fuzz/run.sh [OPTIONS] --build-only
#
#   HARNESS          safetensors, config or bpe_tokenizer (fuzz/fuzz_HARNESS.cpp)
#   SECONDS          how long to fuzz
#   --build-dir DIR  where the harnesses are built and the working corpus kept
#                    (default: build-fuzz in the repository root)
#   --no-build       run what is already built in DIR (ctest builds once, in fuzz.build)
#   --fresh          start from the committed seeds alone; by default a run continues from
#                    the corpus that earlier runs grew in DIR
#   LIBFUZZER_FLAGS  passed on, e.g. -fork=2 -ignore_crashes=1 to keep going after a finding
#
# The committed seeds, fuzz/corpus/HARNESS/, are copied into DIR/work/HARNESS/corpus, which
# libFuzzer grows; they are never written to. An input that crashes, trips a sanitizer,
# leaks, runs over 10 s or over 2 GB is saved in DIR/work/HARNESS/findings/ and listed.
#
# Exit status: 0 no finding; 1 a finding; 2 a usage or build error; 77 clang++ is missing
# (ctest reports the test as skipped; scripts/setup.sh installs it).
set -uo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
build_dir="$root/build-fuzz"
build=1
fresh=0
build_only=0

usage() {
    sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

while (($#)); do
    case "$1" in
        --build-dir) build_dir="${2:?--build-dir needs a directory}"; shift ;;
        --no-build) build=0 ;;
        --fresh) fresh=1 ;;
        --build-only) build_only=1 ;;
        -h | --help) usage ;;
        -*) echo "fuzz/run.sh: unknown option '$1'" >&2; usage ;;
        *) break ;;
    esac
    shift
done

if ((build_only)); then
    (($# == 0)) || usage
else
    (($# >= 2)) || usage
    harness="$1"
    seconds="$2"
    shift 2
    if (($#)); then
        [ "$1" = "--" ] || usage
        shift
    fi
    [ -f "$root/fuzz/fuzz_$harness.cpp" ] || {
        echo "fuzz/run.sh: no harness '$harness' (fuzz/fuzz_$harness.cpp); there are:" \
            "$(cd "$root/fuzz" && ls fuzz_*.cpp | sed 's/^fuzz_//; s/\.cpp$//' | tr '\n' ' ')" >&2
        exit 2
    }
    [[ "$seconds" =~ ^[0-9]+$ ]] || { echo "fuzz/run.sh: SECONDS must be a whole number, got '$seconds'" >&2; exit 2; }
fi

if ((build)); then
    command -v clang++ >/dev/null && command -v clang >/dev/null || {
        echo "fuzz/run.sh: SKIPPED: clang/clang++ not found (scripts/setup.sh installs clang)" >&2
        exit 77
    }
    # Configured once; later builds are incremental (sources are globbed with
    # CONFIGURE_DEPENDS, so new files in src/ are picked up).
    if [ ! -f "$build_dir/CMakeCache.txt" ]; then
        mkdir -p "$build_dir"
        cmake -S "$root/fuzz" -B "$build_dir" -DCMAKE_C_COMPILER=clang \
            -DCMAKE_CXX_COMPILER=clang++ >"$build_dir/configure.log" 2>&1 || {
            cat "$build_dir/configure.log" >&2
            echo "fuzz/run.sh: configuring $build_dir failed" >&2
            rm -f "$build_dir/CMakeCache.txt"  # so that the next run configures again
            exit 2
        }
    fi
    target=()
    ((build_only)) || target=(--target "fuzz_$harness")
    cmake --build "$build_dir" "${target[@]}" -j "${JOBS:-$(nproc)}" || {
        echo "fuzz/run.sh: building in $build_dir failed" >&2
        exit 2
    }
fi
((build_only)) && exit 0

exe="$build_dir/fuzz_$harness"
if [ ! -x "$exe" ]; then
    # Under ctest fuzz.build was skipped for want of clang: skip the run too.
    command -v clang++ >/dev/null || { echo "fuzz/run.sh: SKIPPED: clang++ not found" >&2; exit 77; }
    echo "fuzz/run.sh: $exe is not built (run without --no-build)" >&2
    exit 2
fi

work="$build_dir/work/$harness"
((fresh)) && rm -rf "$work"
mkdir -p "$work/corpus" "$work/findings"
cp -r "$root/fuzz/corpus/$harness/." "$work/corpus/"
# libFuzzer takes one dictionary: the JSON tokens every harness parses, plus its own words.
cat "$root/fuzz/dict/json.dict" "$root/fuzz/dict/$harness.dict" >"$work/dict" 2>/dev/null ||
    cat "$root/fuzz/dict/json.dict" >"$work/dict"

before="$(ls "$work/findings" | wc -l)"
# -timeout=10: libFuzzer's default (1200 s a input) would let one hang eat the whole run.
# -rss_limit_mb=2048 (also the default): an input that makes the reader allocate more is a
# finding; no valid file of that size needs it.
echo "fuzz/run.sh: fuzz_$harness for ${seconds}s, corpus $work/corpus"
UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}" \
    "$exe" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -dict="$work/dict" -artifact_prefix="$work/findings/" "$@" "$work/corpus" 2>&1 |
    tee "$work/last_run.log"
status="${PIPESTATUS[0]}"

# libFuzzer's status lines start with the number of inputs run so far ("#1234"), in one
# process and in -fork mode alike (where the final stats are a single job's).
execs="$(grep -o '^#[0-9]*' "$work/last_run.log" | tail -1 | tr -d '#')"
mapfile -t findings < <(cd "$work/findings" && ls -t crash-* leak-* timeout-* oom-* 2>/dev/null)
new=$(($(ls "$work/findings" | wc -l) - before))
echo "fuzz/run.sh: fuzz_$harness: ${execs:-?} executions in ${seconds}s, exit status $status," \
    "$new new finding(s)"
if ((status != 0 || new > 0)); then
    for f in "${findings[@]}"; do echo "  finding: $work/findings/$f"; done
    echo "  reproduce: $exe FILE" >&2
    exit 1
fi
exit 0
