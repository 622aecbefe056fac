#!/usr/bin/env bash
# The fan-out benchmark, as docs/benchmarks.md reports it:
#
#   scripts/bench.sh                     every scenario, 3 runs each, hub and baseline (~10 min)
#   scripts/bench.sh latency memory      only these scenarios
#   scripts/bench.sh sustained --runs 5  any option of the bench binary (see --help)
#   scripts/bench.sh --help
#
# Scenarios: latency, latency-batch, sustained, throughput-1k, throughput-10k, memory,
# handshakes, filter-1k, cluster-fanout, cluster-throughput, cluster-events, cluster-batch,
# cluster-memory (these five start Debian's redis-server and 1 and 3 hub nodes on it). Release profile (`cargo bench`). The raw output goes to the terminal and to
# target/bench-results/fanout-<UTC time>.txt (or $BENCH_OUT); the servers' stderr to
# target/bench-logs/. Traffic goes only to 127.0.0.0/8; the bench stops its servers itself.
# It exits non-zero when any run saw loss, reordering, duplicates or a failed handshake.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

# Up to 15,000 sockets per process: lift the soft open-files limit to the hard one.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

out="${BENCH_OUT:-target/bench-results/fanout-$(date -u +%Y%m%dT%H%M%SZ).txt}"
mkdir -p "$(dirname "$out")"

has_runs=0
for arg in "$@"; do
    case "$arg" in --runs | --runs=* | --smoke | -h | --help) has_runs=1 ;; esac
done
args=("$@")
if [ "$has_runs" = 0 ]; then
    args+=(--runs 3)
fi

{
    echo "# scripts/bench.sh ${*:-(all scenarios)}"
    if git rev-parse --git-dir >/dev/null 2>&1; then
        commit="commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src Cargo.toml || echo ' + uncommitted changes in src/ or Cargo.toml')"
    else
        commit="not a git checkout"
    fi
    echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ), $commit"
    echo "# $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), kernel $(uname -r), $(rustc --version)"
} | tee "$out"

set +e
cargo bench --locked --bench fanout -- "${args[@]}" 2>&1 | tee -a "$out"
status=${PIPESTATUS[0]}
set -e
echo "raw output: $out"
exit "$status"
