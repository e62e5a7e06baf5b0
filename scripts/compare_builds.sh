#!/usr/bin/env bash
# Compares two builds of `moe` on the language recipe, for changes that must not change
# results or speed (a refactor): build the old commit in a worktree, then
#
#   scripts/compare_builds.sh losses OLD/moe NEW/moe [WORKDIR]
#       trains 50 steps at seed 7 with each binary, five ways (softmax_topk; dense; noisy_topk;
#       train.reduction_groups=4; 2 MPI ranks with reduction_groups=4) and compares every
#       metrics.jsonl record's loss, grad_norm and val_loss bit for bit. Exit 1 on a difference.
#       VARIANTS="moe1 moe2" runs a subset (names: moe1 dense1 noisy1 moe1g moe2).
#   scripts/compare_builds.sh speed OLD/moe NEW/moe [PAIRS]
#       tokens/s of the recipe (75 steps, steps 26-75 measured), the two binaries interleaved
#       old new new old ... (PAIRS pairs, default 6) so both see the same load on a shared
#       machine; prints each run and the median ratio new / old.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-}
old=${2:-}
new=${3:-}
if [[ -z $mode || -z $old || -z $new || ! -x $old || ! -x $new ]]; then
    sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
recipe=recipes/lm/moe_fortunes.json

if [[ $mode == losses ]]; then
    work=${4:-$(mktemp -d /tmp/moe_compare.XXXXXX)}
    common=(--set train.steps=50 --set train.log_every=1 --set train.seed=7
            --set train.eval_every=0 --set train.threads=2 --overwrite)
    read -r -a variants <<<"${VARIANTS:-moe1 dense1 noisy1 moe1g moe2}"  # a subset: VARIANTS="..."
    run() {  # run BINARY DIR VARIANT
        local b=$1 d=$2/$3
        case $3 in
            moe1) "$b" train $recipe "${common[@]}" --set out_dir="$d" ;;
            dense1) "$b" train $recipe "${common[@]}" --set model.ffn=dense --set out_dir="$d" ;;
            noisy1) "$b" train $recipe "${common[@]}" --set moe.router=noisy_topk --set out_dir="$d" ;;
            moe1g) "$b" train $recipe "${common[@]}" --set train.reduction_groups=4 --set out_dir="$d" ;;
            moe2) mpirun --allow-run-as-root --oversubscribe -np 2 "$b" train $recipe "${common[@]}" \
                      --set train.threads=1 --set train.reduction_groups=4 --set out_dir="$d" ;;
        esac >"$d.log" 2>&1 || { echo "compare: $3 failed with $b (log: $d.log)"; exit 1; }
    }
    mkdir -p "$work/old" "$work/new"
    status=0
    for v in "${variants[@]}"; do
        run "$old" "$work/old" "$v"
        run "$new" "$work/new" "$v"
        python3 - "$work/old/$v/metrics.jsonl" "$work/new/$v/metrics.jsonl" "$v" <<'EOF' || status=1
import json, sys
def records(path):
    return [(j.get("step"), j.get("loss"), j.get("grad_norm"), j.get("val_loss"))
            for j in map(json.loads, open(path))]
a, b, name = records(sys.argv[1]), records(sys.argv[2]), sys.argv[3]
if a == b:
    print(f"{name}: {len(a)} records identical (last loss {a[-2][1]!r}, val_loss {a[-1][3]!r})")
    sys.exit(0)
first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
print(f"{name}: DIFFERENT from record {first}: {a[first] if first < len(a) else None} vs "
      f"{b[first] if first < len(b) else None}")
sys.exit(1)
EOF
    done
    echo "runs in $work"
    exit $status
fi

if [[ $mode == speed ]]; then
    pairs=${4:-6}
    out=$(mktemp -d /tmp/moe_speed.XXXXXX)
    order=()
    for ((i = 0; i < pairs; i++)); do
        if ((i % 2 == 0)); then order+=(old new); else order+=(new old); fi
    done
    : >"$out/speeds"
    for v in "${order[@]}"; do
        b=$([[ $v == old ]] && echo "$old" || echo "$new")
        "$b" train $recipe --set train.steps=75 --set train.log_every=25 --set train.eval_every=0 \
            --set train.eval_windows=1 --set train.threads=2 --set train.tensorboard=false \
            --set out_dir="$out/$v" --overwrite >"$out/$v.log" 2>&1
        speeds=$(python3 -c "import json,sys; r=[json.loads(l) for l in open(sys.argv[1]) if 'tokens_per_s' in l]; print(' '.join(str(round(x['tokens_per_s'])) for x in r[1:]))" "$out/$v/metrics.jsonl")
        echo "$v $speeds  (load $(cut -d' ' -f1 /proc/loadavg))"
        echo "$v $speeds" >>"$out/speeds"
    done
    python3 - "$out/speeds" <<'EOF'
import statistics, sys
runs = {"old": [], "new": []}
for line in open(sys.argv[1]):
    v, *xs = line.split()
    runs[v] += [float(x) for x in xs]
m = {v: statistics.median(xs) for v, xs in runs.items()}
print(f"median tokens/s: old {m['old']:.0f}, new {m['new']:.0f}, new / old {m['new'] / m['old']:.3f}")
EOF
    exit 0
fi
echo "compare: unknown mode '$mode' (losses or speed)" >&2
exit 2
