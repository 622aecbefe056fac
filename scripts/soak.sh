#!/usr/bin/env bash
# The soak run (outside CI): up to 30 minutes of churning subscribers and steady publishing
# against the release hub; fails on any loss for a connected client or on RSS growth.
#
#   scripts/soak.sh                  30 minutes, 100 events/s, 50 steady + 100 churning
#   scripts/soak.sh --minutes 5      any option of the soak bench (see --help)
#
# Output goes to the terminal and to target/soak-results/soak-<UTC time>.txt (or $SOAK_OUT).
# Loopback only; it stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
out="${SOAK_OUT:-target/soak-results/soak-$(date -u +%Y%m%dT%H%M%SZ).txt}"
mkdir -p "$(dirname "$out")"
cargo bench --locked --bench soak -- "$@" 2>&1 | tee "$out"
