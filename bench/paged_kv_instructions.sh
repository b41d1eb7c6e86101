#!/usr/bin/env bash
# Instruction counts of issue 11's before/after (bench/RESULTS.md): the same gistmem-bench
# command as bench/paged_kv_before_after.sh, run under callgrind, which counts the instructions
# each row executes; unlike wall time they do not move with the machine's load.
#   bench/paged_kv_instructions.sh BEFORE_BINARY [AFTER_BINARY]
# Env: LENGTHS (default "1024 2048 4096 8192 16384 32768"), POLICIES (default
#   "full,window,pool,gist"), TIMED_TURNS (default 1), OUT (where the callgrind files go;
#   default a new temporary directory), MODEL (a checkpoint directory both binaries load; set
#   it: each binary's default model is the one of its own commit, and a row is only comparable
#   on the same model).
# Both binaries need the bench's --policies and --documents flags: for the before binary
# apply bench/paged_kv_before_bench_flags.patch to 41d846d (the bench driver only).
# Counted: each memory::ReadRows call alone (the timed forward turns and the decode step of
# every row; ReadRows exists in both binaries): a dump when it returns, and one before
# memory::Describe, which the bench calls once per row between the untimed read of the
# conversation and the timed turns, so that read lands in the dropped dump. (With valgrind
# 3.19 a second option on ReadRows -- --toggle-collect, --zero-before, --dump-before -- did
# nothing here, hence this split.)
# Single-threaded (--threads 1, OPENBLAS_NUM_THREADS=1): a thread waiting on another would add
# instructions that depend on timing. Needs valgrind and python3; about 50x slower than native.
set -euo pipefail
before=${1:?usage: $0 BEFORE_BINARY [AFTER_BINARY]}
after=${2:-build/bench/gistmem-bench}
out=${OUT:-$(mktemp -d /tmp/paged-kv-instructions.XXXXXX)}
mkdir -p "$out"
turns=${TIMED_TURNS:-1}
echo "callgrind files in $out; $turns timed turn(s) per row"
for n in ${LENGTHS:-1024 2048 4096 8192 16384 32768}; do
  for which in before after; do
    if [ "$which" = before ]; then bin=$before; else bin=$after; fi
    rm -f "$out/$which-$n".*
    OPENBLAS_NUM_THREADS=1 valgrind --tool=callgrind --callgrind-out-file="$out/$which-$n.out" \
      --dump-before='gistmem::memory::Describe*' \
      --dump-after='gistmem::memory::ReadRows*' \
      "$bin" ${MODEL:+--model "$MODEL"} --timed_turns "$turns" --threads 1 --lengths "$n" \
      --policies "${POLICIES:-full,window,pool,gist}" --documents=false >"$out/$which-$n.txt" \
      2>"$out/$which-$n.log"
  done
done
python3 - "$out" "$turns" "${POLICIES:-full,window,pool,gist}" ${LENGTHS:-1024 2048 4096 8192 16384 32768} <<'EOF'
import glob, math, re, sys

out, turns, names, lengths = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(","), sys.argv[4:]

def rows(which, n):
    """[(turn instructions, decode instructions)] per bench row, in the bench's order."""
    dumps = []
    for path in glob.glob(f"{out}/{which}-{n}.out.*"):
        number = int(path.rsplit(".", 1)[1])
        text = open(path, errors="replace").read()
        trigger = re.search(r"^desc: Trigger: (.*)$", text, re.M).group(1)
        total = int(re.search(r"^(?:summary|totals): (\d+)", text, re.M).group(1))
        dumps.append((number, trigger.startswith("--dump-before"), total))
    dumps.sort()
    result, calls = [], None
    for _, row_start, total in dumps + [(0, True, 0)]:  # the program's end closes the last row
        if row_start:
            if calls:
                result.append((sum(calls[:-1]) / turns, calls[-1]))
            calls = []
        elif calls is not None:
            calls.append(total)
    return result
print("| policy | raw tokens | Ir per turn before | after | after/before "
      "| Ir per decode step before | after | after/before |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
ratios = []
for n in lengths:
    b, a = rows("before", n), rows("after", n)
    for name, (tb, db), (ta, da) in zip(names, b, a):
        ratios.append(ta / tb)
        print(f"| {name} | {n} | {tb:.4g} | {ta:.4g} | {ta / tb:.3f} "
              f"| {db:.4g} | {da:.4g} | {da / db:.3f} |")
if ratios:
    geomean = math.exp(sum(map(math.log, ratios)) / len(ratios))
    print(f"\nturns: geomean after/before {geomean:.3f}, max {max(ratios):.3f}")
EOF
