#!/usr/bin/env bash
# The DESIGN §13 throughput check: `wrk -t1 -c32` on loopback against `examples/throughput.rs`
# (one tokio worker, one handler `info!` per request, one request in twenty failing, the JSON
# lines on stdout redirected to a file, mercenary_obs's kept traces exported over OTLP/HTTP to a
# local receiver process) for three stacks: bare axum, mercenary_obs, and the off-the-shelf
# AlwaysOn stack. The stacks take turns for ROUNDS rounds so that a busy machine slows them
# alike; the medians and the ratios to bare are printed.
# Budget: mercenary_obs keeps at least 60% of bare axum's throughput (aim: 75%).
#
#   bash scripts/throughput.sh            # 6 rounds of 5 s per stack, one worker
#   ROUNDS=10 DURATION=10s bash scripts/throughput.sh
#   WORKERS=2 bash scripts/throughput.sh  # two tokio workers (and wrk -t2)
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS="${ROUNDS:-6}"
DURATION="${DURATION:-5s}"
PORT="${PORT:-39871}"
RECEIVER_PORT="${RECEIVER_PORT:-39872}"
WORKERS="${WORKERS:-1}"
export WORKERS
OUT="${OUT:-$(mktemp -d)}"

if ! command -v wrk >/dev/null 2>&1; then
    echo "==> installing wrk"
    SUDO=""
    if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends wrk >/dev/null
fi

cargo build --release --example throughput
BIN="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')/release/examples/throughput"

# The OTLP receiver for the kept traces, one process for the whole run.
WORKERS=1 "$BIN" receiver "127.0.0.1:$RECEIVER_PORT" 2>"$OUT/receiver.err" &
RECEIVER=$!
trap 'kill $RECEIVER 2>/dev/null || true' EXIT
export OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$RECEIVER_PORT"

# CPU time (clock ticks) used so far by the process's tokio worker threads, and by all of its
# threads: "worker total". Read from /proc/PID/task/*/stat (utime + stime).
cpu_ticks() {
    local pid="$1" worker=0 total=0 t comm fields
    for t in /proc/"$pid"/task/*; do
        comm=$(cat "$t/comm" 2>/dev/null) || continue
        # Fields after the command name: state is field 3, utime 14, stime 15.
        fields=$(sed 's/^.*) //' "$t/stat" 2>/dev/null) || continue
        # shellcheck disable=SC2086
        set -- $fields
        total=$((total + ${12} + ${13}))
        case "$comm" in tokio-rt-worker*) worker=$((worker + ${12} + ${13})) ;; esac
    done
    echo "$worker $total"
}
TICK_US=$((1000000 / $(getconf CLK_TCK)))

run_one() {
    local stack="$1"
    # The JSON lines go to a file, as a log shipper tailing a container's output would read them.
    "$BIN" "$stack" "127.0.0.1:$PORT" >"$OUT/$stack.log" 2>"$OUT/$stack.err" &
    local pid=$!
    for _ in $(seq 1 100); do
        if grep -q listening "$OUT/$stack.err" 2>/dev/null; then break; fi
        sleep 0.05
    done
    # Warm-up, then the measured run.
    wrk -t"$WORKERS" -c32 -d2s "http://127.0.0.1:$PORT/users/42" >/dev/null
    local before after out
    before=$(cpu_ticks "$pid")
    out=$(wrk -t"$WORKERS" -c32 -d"$DURATION" "http://127.0.0.1:$PORT/users/42")
    after=$(cpu_ticks "$pid")
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    rm -f "$OUT/$stack.log"
    # "req/s worker-µs-per-request process-µs-per-request": the CPU a request costs the
    # workers (which a one-worker server is bound by, so it mirrors the rate) and the whole
    # process (the writer and export threads besides).
    echo "$out" | awk -v b="$before" -v a="$after" -v tick="$TICK_US" '
        /requests in/ { n = $1 }
        /Requests\/sec/ { rps = $2 }
        END {
            split(b, x, " "); split(a, y, " ");
            printf "%s %.2f %.2f\n", rps, (y[1] - x[1]) * tick / n, (y[2] - x[2]) * tick / n
        }'
}

declare -A results cpu
ratios=""
for round in $(seq 1 "$ROUNDS"); do
    # Bare and mercenary_obs run back to back, in turn first: on a shared machine the load
    # drifts within seconds, and many short paired rounds follow it better than a few long
    # ones (single rounds range from 0.40 to 0.83 on this project's machines).
    order="bare mercenary off-the-shelf"
    if [ $((round % 2)) -eq 0 ]; then order="mercenary bare off-the-shelf"; fi
    for stack in $order; do
        read -r rps worker_us process_us <<<"$(run_one "$stack")"
        echo "round $round: $stack $rps req/s, CPU per request: workers $worker_us µs, process $process_us µs"
        results[$stack]="${results[$stack]:-} $rps"
        cpu[$stack]="${cpu[$stack]:-} $worker_us"
        eval "last_${stack//-/_}=$rps"
    done
    # The round's own ratio: the three runs of a round are seconds apart, so a neighbour's
    # burst of load that slows a whole round cancels out of it.
    ratios="$ratios $(awk -v b="$last_bare" -v o="$last_mercenary" 'BEGIN { printf "%.3f", o/b }')"
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
bare=$(echo "${results[bare]}" | median)
ours=$(echo "${results[mercenary]}" | median)
ots=$(echo "${results[off-the-shelf]}" | median)
echo
echo "medians over $ROUNDS rounds, $WORKERS worker(s) (req/s): bare $bare, mercenary_obs $ours, off-the-shelf AlwaysOn $ots"
awk -v b="$bare" -v o="$ours" -v t="$ots" 'BEGIN {
    printf "mercenary_obs keeps %.0f%% of bare (budget >= 60%%, aim 75%%); off-the-shelf keeps %.0f%%\n", 100*o/b, 100*t/b
}'
echo "mercenary_obs / bare per round:$ratios (median $(echo "$ratios" | median))"
# The rate a worker-bound server reaches is the inverse of the worker CPU a request costs: the
# ratio of the medians is the share of bare axum's capacity kept, read off CPU time.
cpu_bare=$(echo "${cpu[bare]}" | median)
cpu_ours=$(echo "${cpu[mercenary]}" | median)
cpu_ots=$(echo "${cpu[off-the-shelf]}" | median)
awk -v b="$cpu_bare" -v o="$cpu_ours" -v t="$cpu_ots" 'BEGIN {
    printf "worker CPU per request (medians): bare %.2f µs, mercenary_obs %.2f µs, off-the-shelf %.2f µs: mercenary_obs keeps %.0f%% of bare'"'"'s capacity, off-the-shelf %.0f%%\n", b, o, t, 100*b/o, 100*b/t
}'
