"""Three built hub binaries in cluster mode (one Debian `redis-server`, `--save ""`) behind a real
front configured with a block of docs/cluster.md ("A front: nginx or HAProxy"), read from the doc
itself; every test runs once behind each front:

- `haproxy` (Debian's `haproxy`): the doc's HAProxy block; only its `bind` line (plain HTTP on a
  loopback port instead of TLS on 443) and the servers' addresses are replaced.
- `nginx` (Debian's `nginx`, started in the foreground as `nginx -p <tmp> -c <tmp>/nginx.conf
  -e <tmp>/error.log`): the doc's nginx block verbatim inside an outer wrapper (`daemon off;`,
  pid, logs and temp paths in the test's directory, `events {}`, `http { ... }`); only its TLS
  lines (`listen 443 ssl;` becomes a plain `listen` on a loopback port, the two
  `ssl_certificate` lines are dropped) and the upstream servers' addresses are replaced.

Every client talks to the front only, from its own 127.0.0.x source address (HAProxy's `option
forwardfor`, nginx's `X-Forwarded-For $proxy_add_x_forwarded_for`, and the nodes'
`trusted_proxies` make that the address the hub admits).

Without redis-server or the front's binary the tests skip, unless EVENTS_HUB_REQUIRE_REDIS=1
(scripts/test.sh sets it), where they fail.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import websockets.sync.client
from websockets.exceptions import ConnectionClosed, InvalidStatus

from conftest import (REPO_ROOT, SECRET, Hub, _stop_process, assert_welcome, curl, free_port,
                      hub_binary, parse_frame, poll_until, self_signed)

REDIS = shutil.which("redis-server")
FRONT_BINARIES = {"haproxy": shutil.which("haproxy"), "nginx": shutil.which("nginx")}

NODES = ("a", "b", "c")  # the doc's three servers
PREFIX = "events-hub"  # [cluster] key_prefix, the default
WAIT = 20.0  # seconds: the bound for anything that may take a node's death to settle


def doc_block(pattern: str, what: str) -> str:
    """The one block of docs/cluster.md that `pattern` (its first group) matches, as written."""
    doc = (REPO_ROOT / "docs" / "cluster.md").read_text()
    blocks = re.findall(pattern, doc, re.S)
    assert len(blocks) == 1, f"docs/cluster.md has one {what} block"
    return blocks[0]


def substitute(config: str, pattern: str, replacement, count: int) -> str:
    """`re.sub` over lines, asserting the doc's block has exactly `count` such lines."""
    config, done = re.subn(pattern, replacement, config, flags=re.M)
    assert done == count, f"{count} match(es) of {pattern!r} expected, {done} in:\n{config}"
    return config


def haproxy_config(front_port: int, node_ports: dict[str, int]) -> str:
    """The doc's HAProxy configuration with the real ports filled in."""
    config = substitute(doc_block(r"```text\n(# HAProxy.*?)```", "HAProxy"),
                        r"^(\s*)bind .*$", rf"\g<1>bind 127.0.0.1:{front_port}", 1)
    for name, port in node_ports.items():
        config = substitute(config, rf"^(\s*server {name}) \S+", rf"\g<1> 127.0.0.1:{port}", 1)
    return config


def nginx_config(front_port: int, node_ports: dict[str, int],
                 tls: tuple[Path, Path] | None = None) -> str:
    """The doc's nginx block with the real ports filled in, inside the outer wrapper a
    foreground nginx run from the test's directory (`-p`) needs; relative paths are under that
    directory. Without `tls` (certificate, key) its TLS is off: plain `listen`, no
    `ssl_certificate` lines; with it, only the certificate's paths are replaced."""
    block = doc_block(r"```nginx\n(.*?)```", "nginx")
    if tls:
        block = substitute(block, r"^(\s*listen) \d+ ssl;$",
                           rf"\g<1> 127.0.0.1:{front_port} ssl;", 1)
        for directive, path in zip(("ssl_certificate", "ssl_certificate_key"), tls):
            block = substitute(block, rf"^(\s*{directive}) \S+;$", rf"\g<1> {path};", 1)
    else:
        block = substitute(block, r"^(\s*)listen .*$", rf"\g<1>listen 127.0.0.1:{front_port};", 1)
        block = substitute(block, r"^\s*ssl_certificate(_key)? .*\n", "", 2)
    ports = iter(node_ports.values())
    block = substitute(block, r"^(\s*server) \S+;$",
                       lambda m: f"{m[1]} 127.0.0.1:{next(ports)};", len(node_ports))
    return f"""daemon off;
worker_processes 1;
pid nginx.pid;
error_log error.log info;
events {{
    worker_connections 256;
}}
http {{
    access_log access.log;
    client_body_temp_path client_body_temp;
    proxy_temp_path proxy_temp;
    fastcgi_temp_path fastcgi_temp;
    uwsgi_temp_path uwsgi_temp;
    scgi_temp_path scgi_temp;
# --- docs/cluster.md ---
{block}# --- end of docs/cluster.md ---
}}
"""


def redis_command(port: int, *args: str) -> str | None:
    """One command over RESP; a bulk or simple string answer (None for a nil)."""
    request = f"*{len(args)}\r\n" + "".join(f"${len(a)}\r\n{a}\r\n" for a in args)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(request.encode())
        reply = conn.makefile("rb")
        head = reply.readline().rstrip(b"\r\n")
        if head.startswith(b"+"):
            return head[1:].decode()
        if head == b"$-1":
            return None
        assert head.startswith(b"$"), head
        return reply.read(int(head[1:]) + 2)[:-2].decode()


@contextmanager
def redis_server(tmp_path: Path):
    port = free_port()
    home = tmp_path / "redis"
    home.mkdir()
    proc = subprocess.Popen(
        [REDIS, "--save", "", "--appendonly", "no", "--bind", "127.0.0.1",
         "--port", str(port), "--dir", str(home)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )

    def answers() -> bool:
        try:
            return redis_command(port, "PING") == "PONG"
        except OSError:
            return False

    try:
        poll_until(answers, WAIT, "redis-server PING")
        yield port
    finally:
        _stop_process(proc)


def readyz(node: Hub) -> int | None:
    try:
        with urllib.request.urlopen(f"{node.http}/readyz", timeout=2) as reply:
            return reply.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None


@contextmanager
def cluster_node(tmp_path: Path, name: str, redis_port: int):
    """A built hub node `hub-<name>` on the cluster's Redis, ready (`/readyz` 200)."""
    binary = hub_binary()
    if not binary.is_file():
        pytest.fail(f"hub binary {binary} not found: build it or set EVENTS_HUB_BIN")
    log_dir = tmp_path / f"hub-{name}"
    log_dir.mkdir()
    env = {
        **os.environ,
        "EVENTS_HUB__AUTH__JWT_SECRET": SECRET,
        "RUST_LOG": os.environ.get("RUST_LOG", "info"),
        "EVENTS_HUB__CLUSTER__REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "EVENTS_HUB__CLUSTER__NODE_ID": f"hub-{name}",
        # A killed node's client IPs stay leased this long (the shortest allowed).
        "EVENTS_HUB__CLUSTER__LEASE_TTL_SECS": "3",
        # The front's address, as the doc says.
        "EVENTS_HUB__ADMISSION__TRUSTED_PROXIES": "127.0.0.1/32",
    }
    node = Hub(binary, free_port(), env, log_dir)
    node.start()
    try:
        poll_until(lambda: readyz(node) == 200, WAIT, f"hub-{name} /readyz")
        yield node
    finally:
        code = node.stop()
        killed = getattr(node, "killed", False)  # set by Cluster.kill
        assert code == 0 or (killed and code == -signal.SIGKILL), \
            f"hub-{name} exited with {code}\n{node.logs()}"


def check_config(check: list[str]) -> None:
    """`haproxy -c` / `nginx -t` on the doc's configuration: accepted without a warning."""
    done = subprocess.run(check, capture_output=True, text=True, timeout=10)
    output = done.stdout + done.stderr
    assert done.returncode == 0 and not re.search(r"WARNING|\[warn\]", output), \
        f"{' '.join(check)} on the doc's configuration:\n{output}"


@contextmanager
def front_process(tmp_path: Path, name: str, check: list[str], run: list[str], port: int):
    """A front checked with `check`, run in the foreground with `run` (output in
    <tmp>/<name>.log) until it answers /healthz on `port`; its host:port."""
    check_config(check)
    log = open(tmp_path / f"{name}.log", "w")
    proc = subprocess.Popen(run, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    front = f"127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"http://{front}/healthz", timeout=2) as reply:
                return reply.status == 200
        except OSError:
            return False

    try:
        poll_until(healthy, WAIT, f"{name} answering /healthz")
        yield front
    finally:
        _stop_process(proc)
        log.close()


@contextmanager
def haproxy(tmp_path: Path, node_ports: dict[str, int]):
    port = free_port()
    config = tmp_path / "haproxy.cfg"
    config.write_text(haproxy_config(port, node_ports))
    binary = FRONT_BINARIES["haproxy"]
    with front_process(tmp_path, "haproxy", [binary, "-c", "-f", str(config)],
                       [binary, "-db", "-f", str(config)], port) as front:
        yield front


def nginx_argv(home: Path, config: str) -> list[str]:
    """`nginx` run from `home` (created) with `config` written to <home>/nginx.conf."""
    home.mkdir()
    (home / "nginx.conf").write_text(config)
    # -e: the log nginx writes before reading the configuration (else /var/log/nginx).
    return [FRONT_BINARIES["nginx"], "-p", f"{home}/", "-c", str(home / "nginx.conf"),
            "-e", str(home / "error.log")]


@contextmanager
def nginx(tmp_path: Path, node_ports: dict[str, int]):
    port = free_port()
    argv = nginx_argv(tmp_path / "nginx", nginx_config(port, node_ports))
    with front_process(tmp_path, "nginx", [*argv, "-t"], argv, port) as front:
        yield front


FRONTS = {"haproxy": haproxy, "nginx": nginx}


@dataclass
class Cluster:
    front: str  # host:port of the front (HAProxy or nginx)
    nodes: dict[str, Hub]  # by node_id
    redis_port: int
    reader: str
    publisher: str

    def holder(self, client_id: str) -> str:
        """The node_id holding a client, from the cluster's registry (`<p>:client:<id>`)."""
        entry = redis_command(self.redis_port, "GET", f"{PREFIX}:client:{client_id}")
        assert entry is not None, f"client {client_id} is not registered"
        return entry.split("\n", 1)[0]

    def kill(self, node_id: str) -> None:
        node = self.nodes[node_id]
        node.killed = True
        node.proc.kill()
        node.proc.wait(timeout=5)

    @contextmanager
    def connect(self, source: str, query: str, headers: dict[str, str] | None = None):
        """A WebSocket through the front from `source` (with extra `headers`), with its
        welcome; closed at the end."""
        with websockets.sync.client.connect(
                f"ws://{self.front}/v1/ws/subscribe?{query}",
                additional_headers={"Authorization": f"Bearer {self.reader}", **(headers or {})},
                source_address=(source, 0), open_timeout=10) as ws:
            yield ws, parse_frame(ws.recv(timeout=10))

    def publish(self, event: dict | list) -> dict:
        """POST /v1/events through the front: a hub's 202 receipt. The front's own 503 (a
        node just died and is not marked down yet, so no hub got the request) is retried."""
        deadline = time.monotonic() + WAIT
        while True:
            reply = curl("-X", "POST", f"http://{self.front}/v1/events",
                         "-H", f"Authorization: Bearer {self.publisher}",
                         "-H", "Content-Type: application/json", "-d", json.dumps(event))
            if reply.status == 202:
                return reply.json()
            assert reply.status == 503 and not reply.body.lstrip().startswith("{"), reply
            assert time.monotonic() < deadline, f"the front kept answering {reply}"
            time.sleep(0.1)  # poll interval, not synchronisation

    def unsubscribe(self, client_id: str, event_types: list[str]):
        return curl("-X", "POST", f"http://{self.front}/v1/ws/unsubscribe",
                    "-H", f"Authorization: Bearer {self.reader}",
                    "-H", "Content-Type: application/json",
                    "-d", json.dumps({"client_id": client_id, "event_types": event_types}))


def require(tools: dict[str, str | None]) -> None:
    """Skips (fails with EVENTS_HUB_REQUIRE_REDIS=1) when one of `tools` (name → path) is
    missing."""
    missing = ", ".join(name for name, path in tools.items() if not path)
    if missing:
        why = (f"{missing} not on PATH "
               f"(scripts/install-test-deps.sh installs redis-server, haproxy and nginx)")
        if os.environ.get("EVENTS_HUB_REQUIRE_REDIS") == "1":
            pytest.fail(f"{why} and EVENTS_HUB_REQUIRE_REDIS=1", pytrace=False)
        pytest.skip(why)


@pytest.fixture(params=sorted(FRONTS))
def cluster(request, tmp_path: Path):
    front_name = request.param
    require({"redis-server": REDIS, front_name: FRONT_BINARIES[front_name]})
    with ExitStack() as stack:
        redis_port = stack.enter_context(redis_server(tmp_path))
        nodes = {f"hub-{n}": stack.enter_context(cluster_node(tmp_path, n, redis_port))
                 for n in NODES}
        front = stack.enter_context(FRONTS[front_name](
            tmp_path, {n: nodes[f"hub-{n}"].port for n in NODES}))
        any_node = nodes["hub-a"]
        yield Cluster(front, nodes, redis_port, any_node.mint_token("alice", "READ_ONLY"),
                      any_node.mint_token("publisher", "EVENTS_PUBLISH"))


def test_the_docs_nginx_block_with_its_tls_lines_passes_nginx_t(tmp_path: Path):
    # The cluster tests run the front in plain HTTP; here the block's TLS lines are kept (only
    # the certificate's paths filled in) and nginx must accept them without a warning.
    require({"nginx": FRONT_BINARIES["nginx"]})
    config = nginx_config(free_port(), {n: free_port() for n in NODES}, tls=self_signed(tmp_path))
    check_config([*nginx_argv(tmp_path / "nginx", config), "-t"])


def receive(ws, count: int) -> list[dict]:
    return [parse_frame(ws.recv(timeout=10)) for _ in range(count)]


def test_events_published_through_the_front_arrive_in_one_order(cluster: Cluster):
    with cluster.connect("127.0.0.2", "event_types=pdfm") as (ws, welcome):
        first = welcome["body"]["positions"]["pdfm"] + 1
        # One request each: round robin spreads them over the nodes.
        for i in range(6):
            cluster.publish({"event_type": "pdfm", "message": f"m-{i}"})
        frames = receive(ws, 6)
        assert [f["seq"] for f in frames] == list(range(first, first + 6))
        assert [f["message"] for f in frames] == [f"m-{i}" for i in range(6)]
        assert {f["epoch"] for f in frames} == {welcome["body"]["epoch"]}


def test_a_client_of_a_killed_node_resumes_through_the_front_with_nothing_lost(cluster: Cluster):
    source = "127.0.0.3"
    with cluster.connect(source, "event_types=pdfm") as (ws, welcome):
        epoch = welcome["body"]["epoch"]
        for i in range(3):
            cluster.publish({"event_type": "pdfm", "message": f"before-{i}"})
        last = receive(ws, 3)[-1]
        cluster.kill(cluster.holder(welcome["body"]["client_id"]))
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)

    for i in range(10):
        cluster.publish({"event_type": "pdfm", "message": f"away-{i}"})
    # Reconnect as a client does: retry while the dead node's lease on this IP lasts (409)
    # or the front still picks the dead node (its own 503).
    query = f"event_types=pdfm&since=pdfm:{last['seq']}&epoch={epoch}"
    deadline = time.monotonic() + WAIT
    with ExitStack() as stack:
        while True:
            try:
                ws, welcome = stack.enter_context(cluster.connect(source, query))
                break
            except InvalidStatus as refused:
                assert refused.response.status_code in (409, 503), refused
                assert time.monotonic() < deadline, f"never readmitted: {refused}"
                time.sleep(0.1)  # poll interval, not synchronisation
        assert welcome["body"]["recovered"] is True, welcome
        assert welcome["body"]["epoch"] == epoch, welcome
        replayed = receive(ws, 10)
        assert [f["seq"] for f in replayed] == list(range(last["seq"] + 1, last["seq"] + 11))
        assert [f["message"] for f in replayed] == [f"away-{i}" for i in range(10)]
        cluster.publish({"event_type": "pdfm", "message": "live"})
        assert receive(ws, 1)[0]["message"] == "live"


def test_unsubscribe_through_the_front_works_for_a_client_on_any_node(cluster: Cluster):
    # Clients from distinct addresses until every node holds one (all open at once: they are
    # told apart by X-Forwarded-For, or the second would be refused 409).
    by_node = {}
    with ExitStack() as stack:
        for n in range(2, 14):
            ws, welcome = stack.enter_context(
                cluster.connect(f"127.0.1.{n}", "event_types=pdfm,orchestrator"))
            client = welcome["body"]["client_id"]
            by_node.setdefault(cluster.holder(client), (ws, client))
            if len(by_node) == len(NODES):
                break
        assert sorted(by_node) == sorted(cluster.nodes), by_node.keys()

        for node_id, (ws, client) in by_node.items():
            reply = cluster.unsubscribe(client, ["pdfm"])
            assert reply.status == 200, (node_id, reply)
            assert reply.json()["unsubscribed"] == ["pdfm"], (node_id, reply)
        # In force when answered: pdfm no longer reaches them, orchestrator does.
        cluster.publish([{"event_type": "pdfm", "message": "GONE"},
                         {"event_type": "orchestrator", "message": "STILL_HERE"}])
        for node_id, (ws, _) in by_node.items():
            assert receive(ws, 1)[0]["message"] == "STILL_HERE", node_id


def test_a_clients_own_x_forwarded_for_does_not_choose_its_address(cluster: Cluster):
    # The front appends the real address; the hub reads right to left, so a client claiming
    # other addresses is still one IP (max_connections_per_ip = 1): its second socket is 409.
    with cluster.connect("127.0.2.1", "event_types=pdfm", {"X-Forwarded-For": "127.0.2.8"}):
        with pytest.raises(InvalidStatus) as refused:
            with cluster.connect("127.0.2.1", "event_types=pdfm",
                                 {"X-Forwarded-For": "127.0.2.9"}):
                pass
        assert refused.value.response.status_code == 409, refused.value
        # The address it claimed is free: a client really there is admitted.
        with cluster.connect("127.0.2.8", "event_types=pdfm") as (_, welcome):
            assert_welcome(welcome, ["pdfm", "global"])
