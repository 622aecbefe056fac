#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it (.ci/run calls this):
#   1. installs what the tests need (scripts/install-test-deps.sh: wscat, websocat, curl,
#      Python websockets + pytest), skipping whatever is already there;
#   2. checks formatting and lints (cargo fmt, clippy -D warnings) and that no modules import
#      each other in a circle;
#   3. runs the unit and integration tests (real sockets on 127.0.0.1), then a smoke run of the
#      fan-out benchmark harness (a few hundred sockets, asserting zero loss);
#   4. runs the end-to-end client tests (tests/e2e) against the built binary, the snippets of
#      README.md and docs/ among them (tests/e2e/test_docs_snippets.py);
#   5. runs the Autobahn RFC 6455 conformance cases (tests/conformance, via kosoku) against
#      the hub's own socket handling.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

step() { printf '\n== %s\n' "$*"; }

step "test dependencies"
scripts/install-test-deps.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --locked --all-targets -- -D warnings

step "the hub builds without the OpenNebula source and the cluster (cargo features opennebula, cluster off)"
cargo check --locked --no-default-features --lib --bins

step "no module cycles (scripts/check-module-cycles.py)"
python3 scripts/check-module-cycles.py

step "cargo test (unit + integration)"
# The cluster tests (tests/integration/cluster.rs) start their own redis-server, installed by
# install-test-deps.sh; here its absence is a failure, not a skip.
export EVENTS_HUB_REQUIRE_REDIS=1
cargo test --locked

step "benchmark harness smoke run (a few hundred sockets, zero loss)"
cargo test --locked --bench fanout -- --smoke

step "end-to-end clients: websocat, wscat, Python websockets, curl"
# `cargo test` above built target/debug/events-hub (the binary tests run it): no second build.
test -x target/debug/events-hub
# EVENTS_HUB_VALIDATE_FRAMES=1: every frame a client prints is validated against docs/asyncapi.json.
EVENTS_HUB_VALIDATE_FRAMES=1 EVENTS_HUB_BIN="$PWD/target/debug/events-hub" python3 -m pytest -q tests/e2e

step "RFC 6455 conformance: Autobahn cases via kosoku"
EVENTS_HUB_BIN="$PWD/target/debug/events-hub" python3 -m pytest -q tests/conformance
