"""Black-box end-to-end harness for the events-hub binary.

Every test gets its own hub process (function-scoped ``hub`` fixture) on a free
127.0.0.1 port, because the hub admits one WebSocket per client IP and every
client here comes from 127.0.0.1.

Nothing in here sleeps to synchronise: readiness is polled with a deadline, and
client output is read line by line through a queue with a deadline.

Environment:
  EVENTS_HUB_BIN   path of the hub binary (default: <repo>/target/release/events-hub)
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
E2E_DIR = Path(__file__).resolve().parent

# websocat is installed by `cargo install`, which puts it in ~/.cargo/bin.
_cargo_bin = Path(os.environ.get("CARGO_HOME", Path.home() / ".cargo")) / "bin"
if str(_cargo_bin) not in os.environ.get("PATH", "").split(os.pathsep):
    os.environ["PATH"] = os.environ.get("PATH", "") + os.pathsep + str(_cargo_bin)

SECRET = "e2e-test-secret-0123456789abcdef0123456789abcdef"
LINE_TIMEOUT = 10.0  # seconds to wait for one expected line from a client
START_TIMEOUT = 20.0  # seconds for the hub to answer /healthz
STOP_TIMEOUT = 15.0  # seconds for the hub to exit after SIGTERM (grace is 10 s)
CLIENT_TIMEOUT = 20.0  # hard bound for a client process that should exit by itself

HEX64 = re.compile(r"^[0-9a-f]{64}$")
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")
ENVELOPE_ORDER = ["id", "ref_id", "event_type", "timestamp", "message", "body", "client_id", "origin", "seq", "epoch"]
WELCOME_MESSAGE = "WebSocket connection established subscribed to global by default"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def hub_binary() -> Path:
    raw = os.environ.get("EVENTS_HUB_BIN", "target/release/events-hub")
    path = Path(raw)
    return path if path.is_absolute() else REPO_ROOT / path


def require_tool(name: str) -> str:
    """Absolute path of a client tool; a missing tool is a failure, not a skip."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found on PATH: run scripts/install-test-deps.sh")
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def is_uuid4(text: str) -> bool:
    try:
        return uuid.UUID(text).version == 4 and str(uuid.UUID(text)) == text
    except (ValueError, TypeError, AttributeError):
        return False


def assert_envelope(frame: dict) -> None:
    """SPEC section 5: key order, 64-hex id, RFC 3339 UTC timestamp with microseconds."""
    keys = list(frame)
    assert set(keys) <= set(ENVELOPE_ORDER), f"unexpected keys in {frame}"
    assert keys == [k for k in ENVELOPE_ORDER if k in frame], f"key order {keys}"
    assert HEX64.match(frame["id"]), f"id is not 64 lowercase hex: {frame['id']!r}"
    assert TIMESTAMP.match(frame["timestamp"]), f"bad timestamp {frame['timestamp']!r}"


def assert_welcome(frame: dict, subscriptions: list[str]) -> str:
    """Checks the welcome frame and returns its client_id."""
    assert_envelope(frame)
    assert frame["event_type"] == "global", frame
    assert frame["message"] == WELCOME_MESSAGE, frame
    assert "ref_id" not in frame, frame
    body = frame["body"]
    assert body["subscriptions"] == subscriptions, frame
    assert is_uuid4(body["client_id"]), f"client_id is not a uuid v4: {frame}"
    return body["client_id"]


# --------------------------------------------------------------------------- #
# Reading a subprocess's output line by line, with deadlines                   #
# --------------------------------------------------------------------------- #


class LineReader:
    """Drains a text stream on a thread; lines are taken with a deadline."""

    _EOF = object()

    def __init__(self, stream, name: str):
        self.name = name
        self.seen: list[str] = []
        self._queue: queue.Queue = queue.Queue()
        self._eof = False
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream) -> None:
        try:
            for line in iter(stream.readline, ""):
                self._queue.put(line.rstrip("\r\n"))
        except (ValueError, OSError):  # stream closed under us
            pass
        finally:
            self._queue.put(self._EOF)

    def next_line(self, timeout: float = LINE_TIMEOUT) -> str | None:
        """Next line, or None at end of stream; fails the test after `timeout` s."""
        if self._eof:
            return None
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(
                f"{self.name}: no line within {timeout} s; seen so far: {self.seen}"
            ) from None
        if item is self._EOF:
            self._eof = True
            return None
        self.seen.append(item)
        return item

    def rest(self, timeout: float = LINE_TIMEOUT) -> list[str]:
        """Every remaining line up to end of stream (the process must be exiting)."""
        lines = []
        deadline = time.monotonic() + timeout
        while (line := self.next_line(max(0.0, deadline - time.monotonic()))) is not None:
            lines.append(line)
        return lines

    def join(self, timeout: float = 5.0) -> None:
        self._thread.join(timeout)


@dataclass
class Client:
    """A running client process; `stdin` is kept open so it does not hang up."""

    name: str
    proc: subprocess.Popen
    out: LineReader
    err: LineReader

    def next_frame(self, timeout: float = LINE_TIMEOUT, prefix: str = "") -> dict:
        """Next JSON frame printed by the client (after `prefix` on its line)."""
        return parse_frame(self.expect_prefix(prefix, timeout))

    def next_json(self, timeout: float = LINE_TIMEOUT) -> dict:
        """Next JSON object the program prints that is not a hub frame (a test driver's
        answer): parsed, never validated against the AsyncAPI schemas."""
        line = self.expect_prefix("", timeout)
        value = json.loads(line)
        assert isinstance(value, dict), f"not a JSON object: {line!r}"
        return value

    def expect_prefix(self, prefix: str, timeout: float = LINE_TIMEOUT) -> str:
        """Next non-blank stdout line, which must start with `prefix`; returns the rest."""
        deadline = time.monotonic() + timeout
        line = self.out.next_line(timeout)
        while line is not None and not line.strip():
            line = self.out.next_line(max(0.0, deadline - time.monotonic()))
        if line is None:
            code = self.proc.wait(timeout=5)
            raise AssertionError(
                f"{self.name} exited (code {code}) instead of printing {prefix or 'a frame'!r}; "
                f"stdout {self.out.seen}, stderr {self.err.rest(2)}"
            )
        assert line.startswith(prefix), f"{self.name}: expected {prefix!r} in {line!r}"
        return line[len(prefix):]

    def type_line(self, text: str) -> None:
        """What a user types into the client (one message per line)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def wait_exit(self, timeout: float = CLIENT_TIMEOUT) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.name} still running after {timeout} s; stdout {self.out.seen}"
            ) from None


def parse_frame(line: str) -> dict:
    """JSON of one printed frame. wscat on a terminal prefixes `< ` and colours."""
    text = _ANSI.sub("", line).strip()
    if text.startswith("< "):
        text = text[2:]
    try:
        frame = json.loads(text)
    except json.JSONDecodeError:
        raise AssertionError(f"not a JSON frame: {line!r}") from None
    assert isinstance(frame, dict), f"frame is not a JSON object: {line!r}"
    if VALIDATE_FRAMES:
        validate_server_frame(frame)
    return frame


# With EVENTS_HUB_VALIDATE_FRAMES=1, every frame a client prints (`parse_frame`, so every
# `Client.next_frame` of every e2e test) is also validated against the AsyncAPI document's
# `ServerFrame` schema. `scripts/test.sh` turns it on, so every frame the e2e suite sees is
# checked against docs/asyncapi.json; off by default for a quick local run.
VALIDATE_FRAMES = os.environ.get("EVENTS_HUB_VALIDATE_FRAMES") == "1"
_frame_validator = None


def validate_server_frame(frame: dict) -> None:
    global _frame_validator
    if _frame_validator is None:
        from jsonschema import Draft7Validator
        from referencing import Registry, Resource
        from referencing.jsonschema import DRAFT7

        doc = json.loads((REPO_ROOT / "docs" / "asyncapi.json").read_text())
        registry = Registry().with_resource(
            "urn:events-hub:asyncapi", Resource(contents=doc, specification=DRAFT7))
        # AsyncAPI 3.0's schemas are JSON Schema draft-07 (a superset of it).
        _frame_validator = Draft7Validator(
            {"$ref": "urn:events-hub:asyncapi#/components/schemas/ServerFrame"},
            registry=registry, format_checker=Draft7Validator.FORMAT_CHECKER)
    _frame_validator.validate(frame)


def _stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    try:
        if proc.stdin:
            proc.stdin.close()
    except OSError:
        pass
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


@contextmanager
def run_client(argv: list[str], *, env: dict | None = None,
               name: str | None = None) -> Iterator[Client]:
    """Starts a client with stdin/stdout/stderr on pipes; always stopped on exit."""
    name = name or Path(argv[0]).name
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        bufsize=1,
        env={**os.environ, **(env or {})},
        cwd=E2E_DIR,
    )
    client = Client(name, proc, LineReader(proc.stdout, f"{name} stdout"),
                    LineReader(proc.stderr, f"{name} stderr"))
    try:
        yield client
    finally:
        _stop_process(proc)
        client.out.join()
        client.err.join()


# --------------------------------------------------------------------------- #
# curl                                                                          #
# --------------------------------------------------------------------------- #


@dataclass
class HttpReply:
    status: int
    headers: dict[str, str]
    body: str
    raw: str = field(repr=False, default="")

    def json(self):
        try:
            return json.loads(self.body)
        except json.JSONDecodeError:
            raise AssertionError(f"body is not JSON: {self.raw!r}") from None


def curl(*args: str, timeout: float = 10.0) -> HttpReply:
    """Runs `curl <args>` as typed in the guides, plus `-sS -i --max-time` so the
    status line and headers can be read back."""
    argv = [require_tool("curl"), *args, "-sS", "-i", "--max-time", str(int(timeout))]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout + 5)
    assert done.returncode == 0, f"curl failed ({done.returncode}): {done.stderr}\n{argv}"
    return parse_http(done.stdout)


def parse_http(raw: str) -> HttpReply:
    text = raw.replace("\r\n", "\n")
    # Skip interim 1xx blocks (100 Continue); a 101 would be the final answer.
    while True:
        head, sep, rest = text.partition("\n\n")
        status = int(head.split("\n", 1)[0].split()[1])
        if 100 <= status < 200 and status != 101 and rest.startswith("HTTP/"):
            text = rest
            continue
        break
    headers = {}
    for line in head.split("\n")[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    return HttpReply(status, headers, rest, raw)


# --------------------------------------------------------------------------- #
# The hub                                                                       #
# --------------------------------------------------------------------------- #


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A development certificate for localhost and 127.0.0.1, as docs/operations.md makes it."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [require_tool("openssl"), "req", "-x509", "-newkey", "ec",
         "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True, timeout=30,
    )
    return cert, key


@dataclass
class Hub:
    binary: Path
    port: int
    env: dict[str, str]
    log_dir: Path
    proc: subprocess.Popen | None = None
    exit_code: int | None = None
    # Extra command-line arguments, e.g. ["--config", path].
    args: list[str] = field(default_factory=list)
    # The certificate the hub serves with `[server.tls]`, trusted by the probes and `publish`;
    # None for plain HTTP.
    ca_file: Path | None = None

    @property
    def http(self) -> str:
        scheme = "https" if self.ca_file else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        scheme = "wss" if self.ca_file else "ws"
        return f"{scheme}://127.0.0.1:{self.port}"

    def _tls_context(self) -> ssl.SSLContext | None:
        return ssl.create_default_context(cafile=str(self.ca_file)) if self.ca_file else None

    def start(self) -> None:
        self.stdout = open(self.log_dir / "hub.stdout.log", "w")
        self.stderr = open(self.log_dir / "hub.stderr.log", "w")
        self.proc = subprocess.Popen(
            [str(self.binary), "--listen", f"127.0.0.1:{self.port}", *self.args],
            stdin=subprocess.DEVNULL, stdout=self.stdout, stderr=self.stderr,
            env=self.env,
        )
        try:
            self._wait_healthy()
        except BaseException:
            self.proc.kill()
            self.proc.wait(timeout=5)
            self.exit_code = self.proc.returncode
            self.stdout.close()
            self.stderr.close()
            raise

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            code = self.proc.poll()
            if code is not None:
                raise AssertionError(f"hub exited with {code} during start-up\n{self.logs()}")
            try:
                with urllib.request.urlopen(f"{self.http}/healthz", timeout=1,
                                            context=self._tls_context()) as reply:
                    if reply.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, socket.timeout):
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"/healthz not 200 within {START_TIMEOUT} s\n{self.logs()}")
            time.sleep(0.05)  # poll interval, not synchronisation

    def stop(self) -> int:
        """SIGTERM; returns the exit code (idempotent)."""
        if self.exit_code is None and self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.exit_code = self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
                raise AssertionError(
                    f"hub still running {STOP_TIMEOUT} s after SIGTERM\n{self.logs()}"
                ) from None
            finally:
                self.stdout.close()
                self.stderr.close()
        return self.exit_code

    def logs(self, tail: int = 40) -> str:
        parts = []
        for name in ("hub.stdout.log", "hub.stderr.log"):
            path = self.log_dir / name
            if path.exists():
                lines = path.read_text(errors="replace").splitlines()[-tail:]
                parts.append(f"--- {name} (last {tail} lines) ---\n" + "\n".join(lines))
        return "\n".join(parts)

    def mint_token(self, sub: str, claims: str, ttl_secs: int | None = None) -> str:
        argv = [str(self.binary), "mint-token", "--sub", sub, "--claims", claims]
        if ttl_secs is not None:
            argv += ["--ttl-secs", str(ttl_secs)]
        done = subprocess.run(argv, capture_output=True, text=True, env=self.env, timeout=10)
        assert done.returncode == 0, f"mint-token failed: {done.stderr}"
        token = done.stdout.strip()
        assert re.fullmatch(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+", token), \
            f"mint-token did not print just a JWT: {done.stdout!r}"
        return token

    def publish(self, token: str, event: dict | list) -> HttpReply:
        """`curl -X POST .../v1/events` with a JSON event, as an operator would."""
        tls = ["--cacert", str(self.ca_file)] if self.ca_file else []
        return curl(*tls, "-X", "POST", f"{self.http}/v1/events",
                    "-H", f"Authorization: Bearer {token}",
                    "-H", "Content-Type: application/json",
                    "-d", json.dumps(event))


@contextlib.contextmanager
def running_hub(tmp_path: Path, extra_env: dict | None = None,
                args: list[str] | None = None, ca_file: Path | None = None) -> Iterator[Hub]:
    """The built hub on a free port with the test secret (plus `extra_env`, `args`); stopped
    with SIGTERM at the end, which must exit 0."""
    binary = hub_binary()
    if not binary.is_file():
        pytest.fail(f"hub binary {binary} not found: build it (cargo build --release) "
                    "or set EVENTS_HUB_BIN")
    env = {
        **os.environ,
        "EVENTS_HUB__AUTH__JWT_SECRET": SECRET,
        "RUST_LOG": os.environ.get("RUST_LOG", "info"),
        **(extra_env or {}),
    }
    instance = Hub(binary, free_port(), env, tmp_path, args=args or [], ca_file=ca_file)
    instance.start()
    try:
        yield instance
    finally:
        code = instance.stop()
        assert code == 0, f"hub exited with {code} after SIGTERM\n{instance.logs()}"


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    with running_hub(tmp_path) as instance:
        yield instance


@pytest.fixture
def reader_token(hub: Hub) -> str:
    """Alice, who may subscribe (READ_ONLY)."""
    return hub.mint_token("alice", "READ_ONLY")


@pytest.fixture
def publisher_token(hub: Hub) -> str:
    """An operator's token that may publish."""
    return hub.mint_token("publisher", "READ_ONLY,EVENTS_PUBLISH")


def poll_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Retries `check` until it is true; fails after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)  # poll interval, not synchronisation
