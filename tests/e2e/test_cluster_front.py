"""Three built hub binaries in cluster mode (one Debian `redis-server`, `--save ""`) behind a real
HAProxy (Debian's `haproxy`) configured with the HAProxy block of docs/cluster.md ("A front:
nginx or HAProxy"), read from the doc itself: only its `bind` line (plain HTTP on a loopback
port instead of TLS on 443) and the servers' addresses are replaced. Every client talks to the
front only, from its own 127.0.0.x source address (HAProxy's `option forwardfor` and the
nodes' `trusted_proxies` make that the address the hub admits).

Without redis-server or haproxy the tests skip, unless EVENTS_HUB_REQUIRE_REDIS=1
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

from conftest import (REPO_ROOT, SECRET, Hub, _stop_process, curl, free_port, hub_binary,
                      parse_frame, poll_until)

REDIS = shutil.which("redis-server")
HAPROXY = shutil.which("haproxy")
MISSING = ", ".join(name for name, path in (("redis-server", REDIS), ("haproxy", HAPROXY))
                    if not path)

NODES = ("a", "b", "c")  # the doc's three servers
PREFIX = "events-hub"  # [cluster] key_prefix, the default
WAIT = 20.0  # seconds: the bound for anything that may take a node's death to settle


def doc_haproxy_config() -> str:
    """The HAProxy block of docs/cluster.md, as written there."""
    doc = (REPO_ROOT / "docs" / "cluster.md").read_text()
    blocks = re.findall(r"```text\n(# HAProxy.*?)```", doc, re.S)
    assert len(blocks) == 1, "docs/cluster.md has one HAProxy block"
    return blocks[0]


def front_config(front_port: int, node_ports: dict[str, int]) -> str:
    """The doc's configuration with the real ports filled in."""
    config, binds = re.subn(r"^(\s*)bind .*$", rf"\g<1>bind 127.0.0.1:{front_port}",
                            doc_haproxy_config(), flags=re.M)
    assert binds == 1, config
    for name, port in node_ports.items():
        config, servers = re.subn(rf"^(\s*server {name}) \S+", rf"\g<1> 127.0.0.1:{port}",
                                  config, flags=re.M)
        assert servers == 1, f"server {name} in {config}"
    return config


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


@contextmanager
def haproxy(tmp_path: Path, nodes: dict[str, Hub]):
    port = free_port()
    config = tmp_path / "haproxy.cfg"
    config.write_text(front_config(port, {name: n.port for name, n in nodes.items()}))
    check = subprocess.run([HAPROXY, "-c", "-f", str(config)], capture_output=True,
                           text=True, timeout=10)
    assert check.returncode == 0 and "WARNING" not in check.stdout + check.stderr, \
        f"haproxy -c on the doc's configuration:\n{check.stdout}{check.stderr}"
    log = open(tmp_path / "haproxy.log", "w")
    proc = subprocess.Popen([HAPROXY, "-db", "-f", str(config)], stdin=subprocess.DEVNULL,
                            stdout=log, stderr=subprocess.STDOUT)
    front = f"127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"http://{front}/healthz", timeout=2) as reply:
                return reply.status == 200
        except OSError:
            return False

    try:
        poll_until(healthy, WAIT, "the front answering /healthz")
        yield front
    finally:
        _stop_process(proc)
        log.close()


@dataclass
class Cluster:
    front: str  # host:port of HAProxy
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
    def connect(self, source: str, query: str):
        """A WebSocket through the front from `source`, with its welcome; closed at the end."""
        with websockets.sync.client.connect(
                f"ws://{self.front}/v1/ws/subscribe?{query}",
                additional_headers={"Authorization": f"Bearer {self.reader}"},
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


@pytest.fixture
def cluster(tmp_path: Path):
    if MISSING:
        why = (f"{MISSING} not on PATH "
               "(scripts/install-test-deps.sh installs redis-server and haproxy)")
        if os.environ.get("EVENTS_HUB_REQUIRE_REDIS") == "1":
            pytest.fail(f"{why} and EVENTS_HUB_REQUIRE_REDIS=1", pytrace=False)
        pytest.skip(why)
    with ExitStack() as stack:
        redis_port = stack.enter_context(redis_server(tmp_path))
        nodes = {f"hub-{n}": stack.enter_context(cluster_node(tmp_path, n, redis_port))
                 for n in NODES}
        front = stack.enter_context(haproxy(tmp_path, {n: nodes[f"hub-{n}"] for n in NODES}))
        any_node = nodes["hub-a"]
        yield Cluster(front, nodes, redis_port, any_node.mint_token("alice", "READ_ONLY"),
                      any_node.mint_token("publisher", "EVENTS_PUBLISH"))


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
