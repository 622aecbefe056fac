#!/usr/bin/env bash
# Installs what the end-to-end client tests (tests/e2e) and the conformance run
# (tests/conformance) need on a fresh Debian machine where we are root: curl,
# wscat (npm), websocat (cargo), and the Python packages websockets, pytest,
# kosoku, pyzmq (the OpenNebula-style ZeroMQ publisher of
# tests/e2e/test_opennebula.py; its wheel bundles libzmq), prometheus-client
# (its OpenMetrics parser reads /metrics in tests/e2e/test_operations_files.py),
# jsonschema and openapi-spec-validator (tests/e2e/test_api_schemas.py), the
# CloudEvents SDK `cloudevents` (tests/e2e/test_cloudevents.py), the npm
# package @asyncapi/specs (the AsyncAPI 3.0 JSON Schema, for the same test), and
# Node's `ws` into tests/e2e/node_modules (the docs' Node snippet), and
# Debian's redis-server (the cluster tests, tests/integration/cluster.rs) and
# haproxy and nginx (the cluster's two fronts, tests/e2e/test_cluster_front.py).
#
# Not installed: promtool. Debian ships it only inside the `prometheus` package,
# about 320 MB installed with its dependencies (libjs-moment-timezone alone is
# 213 MB); tests/e2e/test_operations_files.py skips its promtool checks, with
# that reason, when promtool is absent. `apt-get install prometheus` to run them.
#
# Building the hub itself needs a C++ compiler (g++): the `zmq` crate compiles
# libzmq from source (no libzmq -dev package, no cmake). It is checked below.
#
# Idempotent: anything already present is skipped, so a second run takes about
# a second.
#
# Only package registries are used (Debian, npm, crates.io, PyPI); no prebuilt
# binaries are downloaded.
#
# websocat lands in ~/.cargo/bin: put it on PATH in the shell that runs the tests,
#   export PATH="$HOME/.cargo/bin:$PATH"
# (tests/e2e/conftest.py also looks there).
set -euo pipefail
cd "$(dirname "$0")/.."

export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
PYTHON="${PYTHON:-python3}"

say() { printf '[install-test-deps] %s\n' "$*"; }

apt_updated=0
apt_install() {
    if [ "$apt_updated" = 0 ]; then
        say "apt-get update"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        apt_updated=1
    fi
    say "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

# ensure_deb COMMAND PACKAGE: installs Debian's PACKAGE unless COMMAND is on PATH.
ensure_deb() {
    if command -v "$1" >/dev/null 2>&1; then
        say "$1: present ($(command -v "$1"))"
    else
        say "$1: missing, installing"
        apt_install "$2"
    fi
}

# --- curl ---------------------------------------------------------------------
if command -v curl >/dev/null 2>&1; then
    say "curl: present ($(command -v curl))"
else
    say "curl: missing, installing"
    apt_install curl ca-certificates
fi

# --- openssl (tests/e2e/test_tls.py makes a self-signed certificate with it) ---
ensure_deb openssl openssl

# --- redis-server (tests/integration/cluster.rs starts its own, --save "" on a free port) ---
ensure_deb redis-server redis-server

# --- haproxy (tests/e2e/test_cluster_front.py runs its own front on a loopback port) ---
# Debian's package; its service is not used (the test starts `haproxy -db` itself).
ensure_deb haproxy haproxy

# --- nginx (tests/e2e/test_cluster_front.py runs its own nginx front in the foreground) ---
# On bookworm `nginx` is the smallest package with the binary and the http proxy/upstream/ssl
# modules docs/cluster.md's block uses (`nginx-light` is `nginx` plus the echo module); its
# service is not used (the test starts `nginx -p <tmp> -c <tmp>/nginx.conf` itself).
ensure_deb nginx nginx

# --- C++ compiler (libzmq is built from source by the zmq crate) ---------------
if command -v c++ >/dev/null 2>&1 || command -v g++ >/dev/null 2>&1; then
    say "c++: present ($(command -v c++ || command -v g++))"
else
    say "c++: missing, installing g++"
    apt_install g++
fi

# --- Python: websockets + pytest -------------------------------------------------
if ! command -v "$PYTHON" >/dev/null 2>&1; then
    say "$PYTHON: missing, installing python3 + pip"
    apt_install python3 python3-pip
fi
py_missing=()
"$PYTHON" -c 'import websockets' >/dev/null 2>&1 || py_missing+=("websockets>=14")
"$PYTHON" -c 'import pytest' >/dev/null 2>&1 || py_missing+=("pytest")
# kosoku runs the Autobahn TestSuite cases (RFC 6455 conformance) without Docker.
"$PYTHON" -c 'import kosoku' >/dev/null 2>&1 || py_missing+=("kosoku")
# pyzmq plays OpenNebula's Hook Manager (a ZeroMQ PUB socket) in the e2e tests.
"$PYTHON" -c 'import zmq' >/dev/null 2>&1 || py_missing+=("pyzmq")
# prometheus-client's OpenMetrics parser checks the /metrics exposition.
"$PYTHON" -c 'import prometheus_client.openmetrics.parser' >/dev/null 2>&1 || py_missing+=("prometheus-client")
# jsonschema validates frames and responses against docs/openapi.json and docs/asyncapi.json
# (tests/e2e/test_api_schemas.py); openapi-spec-validator checks the OpenAPI document itself.
"$PYTHON" -c 'import jsonschema, referencing' >/dev/null 2>&1 || py_missing+=("jsonschema>=4.18")
"$PYTHON" -c 'import openapi_spec_validator' >/dev/null 2>&1 || py_missing+=("openapi-spec-validator")
# The CloudEvents SDK (cloudevents/sdk-python) builds and parses CloudEvents in
# tests/e2e/test_cloudevents.py; 2.x has the `cloudevents.core` API that test uses.
"$PYTHON" -c 'import cloudevents.core.bindings.http' >/dev/null 2>&1 || py_missing+=("cloudevents>=2.2,<3")
if [ "${#py_missing[@]}" -gt 0 ]; then
    if ! "$PYTHON" -m pip --version >/dev/null 2>&1; then
        apt_install python3-pip
    fi
    say "pip install ${py_missing[*]}"
    # --break-system-packages is needed for Debian's own (externally managed)
    # python3; older pips do not know the flag, so fall back without it.
    "$PYTHON" -m pip install -q --break-system-packages "${py_missing[@]}" 2>/dev/null \
        || "$PYTHON" -m pip install -q "${py_missing[@]}"
else
    say "python: websockets, pytest, kosoku, pyzmq, prometheus-client, jsonschema, openapi-spec-validator and cloudevents present"
fi
# The guide's Python snippet needs websockets >= 14 (`additional_headers=`).
if ! "$PYTHON" - <<'PY'
import sys, websockets
major = int(websockets.__version__.split(".")[0])
sys.exit(0 if major >= 14 else 1)
PY
then
    say "pip install --upgrade websockets>=14"
    "$PYTHON" -m pip install -q --upgrade --break-system-packages "websockets>=14" 2>/dev/null \
        || "$PYTHON" -m pip install -q --upgrade "websockets>=14"
fi

# npm, for the Node tools below (Debian's nodejs + npm when absent).
ensure_npm() {
    if ! command -v npm >/dev/null 2>&1; then
        say "npm: missing, installing nodejs + npm"
        apt_install nodejs npm
    fi
}

# --- wscat (npm) ----------------------------------------------------------------
if command -v wscat >/dev/null 2>&1; then
    say "wscat: present ($(command -v wscat))"
else
    ensure_npm
    say "npm install -g wscat"
    npm install -g --no-fund --no-audit wscat
fi

# Not installed: a Go toolchain for a gorilla/websocket snippet. Debian's golang-go
# (1.19) plus golang-github-gorilla-websocket-dev is 81 MB to download and 453 MB
# installed (golang-1.19-go 335 MB, golang-1.19-src 119 MB), over the 300 MB budget
# for a test dependency; the docs therefore carry no Go snippet (docs/testing.md).

# --- @asyncapi/specs (npm): the official AsyncAPI 3.0 JSON Schema ------------------
# tests/e2e/test_api_schemas.py validates docs/asyncapi.json with it (from `npm root -g`).
if [ -f "$(npm root -g 2>/dev/null)/@asyncapi/specs/schemas/3.0.0-without-\$id.json" ]; then
    say "@asyncapi/specs: present"
else
    ensure_npm
    say "npm install -g @asyncapi/specs@6"
    npm install -g --no-fund --no-audit "@asyncapi/specs@6"
fi

# --- chromium + playwright-core (tests/e2e/test_console.py drives the web console) ---
# Debian's chromium, not a browser downloaded by playwright: playwright-core is
# only the driver library, installed locally under tests/e2e/node_modules and
# pointed at /usr/bin/chromium (executablePath).
ensure_deb chromium chromium
# --- prometheus-alertmanager (tests/e2e/test_alertmanager.py) -------------------
# A real Alertmanager pair notifying the hub's receiver; Debian's package, started by the test
# on loopback (no service is started here: the test runs its own, gossip off).
ensure_deb prometheus-alertmanager prometheus-alertmanager
# Node packages for the e2e tests, into tests/e2e/node_modules (git-ignored), in ONE npm
# command: `npm install --no-save` prunes whatever an earlier --no-save install put there.
#   ws: the docs' Node snippet (tests/e2e/test_docs_snippets.py; about 2 s, 200 KB);
#   playwright-core: the driver for Debian's chromium (tests/e2e/test_console.py).
WS_VERSION=8.18.3
PLAYWRIGHT_CORE_VERSION=1.65.1
e2e_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/tests/e2e"
node_version() { node -p "require('$e2e_dir/node_modules/$1/package.json').version" 2>/dev/null; }
if [ "$(node_version ws)" = "$WS_VERSION" ] \
    && [ "$(node_version playwright-core)" = "$PLAYWRIGHT_CORE_VERSION" ]; then
    say "node packages: present (ws $WS_VERSION, playwright-core $PLAYWRIGHT_CORE_VERSION in $e2e_dir/node_modules)"
else
    ensure_npm
    say "npm install --prefix $e2e_dir ws@$WS_VERSION playwright-core@$PLAYWRIGHT_CORE_VERSION"
    npm install --prefix "$e2e_dir" --no-fund --no-audit --no-save \
        "ws@$WS_VERSION" "playwright-core@$PLAYWRIGHT_CORE_VERSION"
fi

# --- websocat (cargo) -------------------------------------------------------------
if command -v websocat >/dev/null 2>&1; then
    say "websocat: present ($(command -v websocat))"
else
    if ! command -v cargo >/dev/null 2>&1; then
        echo "[install-test-deps] cargo not found: install a Rust toolchain first" >&2
        exit 1
    fi
    say "cargo install --locked websocat (takes a few minutes)"
    cargo install --locked websocat
fi

say "done: curl $(curl --version | head -n1 | cut -d' ' -f2), wscat $(wscat --version), $(websocat --version), websockets $("$PYTHON" -c 'import websockets; print(websockets.__version__)'), pytest $("$PYTHON" -c 'import pytest; print(pytest.__version__)'), pyzmq $("$PYTHON" -c 'import zmq; print(zmq.__version__)')"
