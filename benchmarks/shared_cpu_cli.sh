#!/usr/bin/env bash
# Sharing the CPU as a user meets it: `vaelab train --set train.epochs=5` with the default
# settings (real MNIST), alone, two at once, and beside a busy core (the default and
# OMP_NUM_THREADS=1), then alone again. Prints each run's epoch seconds, the mean of the last
# three, and the thread count it chose (summary.json). Runs in a new temporary folder.
#
#     bash benchmarks/shared_cpu_cli.sh        # needs vaelab installed and MNIST (vaelab data fetch mnist)
set -u
PY=${PYTHON:-python}
W=$(mktemp -d "${TMPDIR:-/tmp}/shared-cpu-cli-XXXX"); cd "$W"
report() { $PY - "$@" <<'P'
import json, sys
for run in sys.argv[1:]:
    records = [json.loads(line) for line in open(f"{run}/metrics.jsonl")]
    threads = json.load(open(f"{run}/summary.json")).get("threads")
    last = sum(r["seconds"] for r in records[-3:]) / 3
    print(f"  {run}: epochs' seconds {[round(r['seconds'], 2) for r in records]}, last three {last:.2f} s; threads {threads}")
P
}
train() { $PY -m vaelab train --set train.epochs=5 --set evaluate.samples=0 --set 'figures.names=[]' --out "$1" > "$1.log" 2>&1 || { echo "$1 failed: see $W/$1.log"; exit 1; }; }
echo "load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "alone:"; train alone; report alone
echo "two at once:"; train pair1 & train pair2 & wait; report pair1 pair2
echo "one core busy:"; $PY -c "while True: pass" & busy=$!; sleep 2
train busy_default; report busy_default
OMP_NUM_THREADS=1 train busy_one_thread; report busy_one_thread
kill $busy
echo "alone again:"; train alone_again; report alone_again
echo "load average $(cut -d' ' -f1-3 /proc/loadavg)"
