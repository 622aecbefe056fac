"""Docs that run (issue 13): every client snippet in README.md and docs/*.md runs against a live
hub and its shown output is compared in shape. Marking rules: docs/testing.md, "Docs that run";
parser and comparison: doc_snippets.py.

    EVENTS_HUB_BIN=target/debug/events-hub python3 -m pytest -q tests/e2e/test_docs_snippets.py
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import threading
import re
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import doc_snippets as ds
from conftest import E2E_DIR, REPO_ROOT, SECRET, hub_binary, poll_until, running_hub

SNIPPETS, PROBLEMS = ds.collect()
LINE_DEADLINE = 10.0
API_KEY = "s3cret-key"
# Commands that keep running until stopped: the runner stops them once the shown output arrived.
LONG_RUNNING = re.compile(r"^(\S+=\S+\s+)*(websocat|wscat|python3|python|node|go)\b|\bevents-hub tail\b(?!.*--count)")
PORT_PLACEHOLDERS = re.compile(r"(127\.0\.0\.1|localhost|0\.0\.0\.0):(8080|8081|18081)\b")
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
# Lines a tool prints on stderr that the docs leave out (websocat's notice on a pipe).
NOISE = re.compile(r"^\[INFO\s+websocat::")
# What a tool prints only on a terminal; the runner's pipes do not show it.
TTY_ONLY = {"Connected (press CTRL+C to quit)"}
EVENT = {"message": "VM_STATE_CHANGED", "body": {"vm_id": "vm-1", "current_state": "running"}}


def test_every_client_snippet_is_marked():
    """A new client snippet must be runnable or say why not; a bad marker fails too."""
    assert not PROBLEMS, "\n".join(PROBLEMS)


# --------------------------------------------------------------------------- #
# The live context a snippet runs in                                           #
# --------------------------------------------------------------------------- #


@dataclass
class Context:
    hub: object
    env: dict
    cwd: Path
    epoch: int
    held: list = field(default_factory=list)  # (socket, client_id) the runner holds
    admin: str = ""

    live_epoch: bool = False
    event_id: str | None = None

    def substitute(self, text: str, client_id: str | None) -> str:
        text = text.replace("cargo run --release -- ", "events-hub ")
        text = text.replace("/etc/events-hub/hub.toml", str(REPO_ROOT / "config/default.toml"))
        text = text.replace("dev-secret", SECRET)
        text = PORT_PLACEHOLDERS.sub(f"127.0.0.1:{self.hub.port}", text)
        if self.live_epoch:
            text = re.sub(r"(epoch=|--epoch )\d{10,}", lambda m: f"{m.group(1)}{self.epoch}", text)
        text = text.replace("<jwt>", self.env["TOKEN"]).replace("<token>", self.env["TOKEN"])
        if client_id:
            text = UUID.sub(client_id, text)
        if self.event_id:
            text = re.sub(r"\b[0-9a-f]{64}\b", self.event_id, text)
        return text

    def publish(self, channel: str) -> None:
        reply = self.hub.publish(self.env["TOKEN"], {"event_type": channel, **EVENT})
        assert reply.status == 202, reply.raw

    def clients(self) -> list[dict]:
        req = urllib.request.Request(f"{self.hub.http}/v1/admin/clients",
                                     headers={"Authorization": f"Bearer {self.admin}"})
        with urllib.request.urlopen(req, timeout=5) as reply:
            return json.load(reply)["clients"]


def open_socket(hub, token: str, channels: str, source_ip: str):
    """A raw WebSocket from `source_ip`, held by the runner; returns (socket, client_id)."""
    from websockets.sync.client import connect

    sock = socket.create_connection(("127.0.0.1", hub.port), source_address=(source_ip, 0))
    ws = connect(f"{hub.ws}/v1/ws/subscribe?event_types={channels}", sock=sock,
                 additional_headers={"Authorization": f"Bearer {token}"}).__enter__()
    welcome = json.loads(ws.recv(timeout=LINE_DEADLINE))
    return ws, welcome["body"]["client_id"], welcome["body"]["epoch"]


def ds_curl(hub, token: str, path: str) -> str:
    req = urllib.request.Request(f"{hub.http}{path}", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=5) as reply:
        return reply.read().decode()


def hub_args(kind: str, tmp_path: Path) -> list[str]:
    if kind == "default":
        return []
    if kind == "api-key":
        config = tmp_path / "hub.toml"
        digest = hashlib.sha256(API_KEY.encode()).hexdigest()
        config.write_text(f'[[auth.api_keys]]\nname = "ci-bot"\nsha256 = "{digest}"\n'
                          'claims = ["READ_ONLY", "EVENTS_PUBLISH"]\n')
        return ["--config", str(config)]
    raise AssertionError(f"unknown hub kind {kind!r}")


# --------------------------------------------------------------------------- #
# Running one snippet                                                           #
# --------------------------------------------------------------------------- #


def steps_of(snip: ds.Snippet) -> list[ds.Step]:
    if "save" in snip.options:
        return ds.parse_transcript(snip.output.text)
    if snip.lang in ("text", "console", ""):
        return ds.parse_transcript(snip.text)
    # `sh`: the block is one script; with `output: next`, the next block is what it prints.
    if snip.output is not None:
        step = ds.Step(snip.text, ds.output_lines(snip.output.text))
        if ds.parse_transcript(snip.output.text) and snip.output.text.lstrip().startswith("$ "):
            raise AssertionError("`output: next` wants plain output, not a transcript")
        return [step]
    # Without shown output, each command is its own step; assignments carry over.
    steps, cmd = [], ""
    for line in snip.text.split("\n"):
        if not line.strip() or line.strip().startswith("#"):
            continue
        cmd = f"{cmd}\n{line}" if cmd else line
        if cmd.endswith("\\") or not ds._complete(cmd):
            continue
        steps.append(ds.Step(cmd, shown=False))
        cmd = ""
    return steps


class MergedReader:
    """stdout and stderr of one process, line by line in arrival order, tagged by stream."""

    def __init__(self, stdout, stderr, name: str):
        self.name, self.seen, self._open = name, [], 2
        self._queue: queue.Queue = queue.Queue()
        self._threads = [threading.Thread(target=self._pump, args=(s, tag), daemon=True)
                         for s, tag in ((stdout, "stdout"), (stderr, "stderr"))]
        for t in self._threads:
            t.start()

    def _pump(self, stream, tag) -> None:
        try:
            for line in iter(stream.readline, ""):
                self._queue.put((tag, line.rstrip("\r\n")))
        except (ValueError, OSError):
            pass
        finally:
            self._queue.put(None)

    def next_line(self, timeout: float):
        """(stream, line), or None once both streams ended; fails after `timeout` s."""
        deadline = time.monotonic() + timeout
        while self._open:
            try:
                item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"{self.name}: no line within {timeout} s; "
                                     f"seen so far: {self.seen}") from None
            if item is None:
                self._open -= 1
                continue
            self.seen.append(item[1])
            return item
        return None

    def rest(self, timeout: float) -> list:
        items, deadline = [], time.monotonic() + timeout
        while (item := self.next_line(max(0.0, deadline - time.monotonic()))) is not None:
            items.append(item)
        return items

    def join(self, timeout: float = 5.0) -> None:
        for t in self._threads:
            t.join(timeout)


def run_step(ctx: Context, snip: ds.Snippet, step: ds.Step, setup: str, client_id) -> list[str]:
    """Runs one command; returns the failures (empty when the output matches the docs)."""
    command = ctx.substitute(step.command, client_id)
    long_running = bool(LONG_RUNNING.search(command.split("\n")[0]))
    script = f"{setup}\n{command}" if setup else command
    proc = subprocess.Popen(["bash", "-c", script], cwd=ctx.cwd, env=ctx.env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, bufsize=1, start_new_session=True)
    out = MergedReader(proc.stdout, proc.stderr, f"{snip.id} `{command[:60]}`")
    failures: list[str] = []
    publish = snip.options.get("publish", "")
    pub_channel, _, pub_after = publish.partition(" after ")
    pub_after = int(pub_after) if pub_after else None
    published = not publish or not long_running
    matched = 0
    expect = [(k, ctx.substitute(t, None) if k == "in" else PORT_PLACEHOLDERS.sub(
        f"127.0.0.1:{ctx.hub.port}", t)) for k, t in step.lines
              if ds.clean(t).strip() not in TTY_ONLY]
    if long_running and not step.shown:
        expect.append(("any-line", ""))
    if snip.options.get("order") == "any" and not long_running:
        return run_unordered(ctx, proc, out, command, expect, snip)
    try:
        if not published and pub_after is None:
            held = {cid for _, cid in ctx.held}
            poll_until(lambda: any(pub_channel in c["subscriptions"] and c["client_id"] not in held
                                   for c in ctx.clients()), LINE_DEADLINE,
                       f"{snip.id}'s socket on {pub_channel}")
            ctx.publish(pub_channel)
            published = True
        wildcard = False
        for kind, text in expect:
            if not published and matched >= pub_after:
                ctx.publish(pub_channel)
                published = True
            if kind == "any":
                wildcard = True
                continue
            if kind == "in":
                proc.stdin.write(text + "\n")
                proc.stdin.flush()
                continue
            while True:
                item = out.next_line(LINE_DEADLINE)
                if item is None:
                    failures.append(f"exited (code {proc.wait(5)}) before printing {text!r}; "
                                    f"printed {out.seen}")
                    return failures
                source, line = item
                if not line.strip() or NOISE.match(line):
                    continue
                if kind == "any-line":
                    diff = [] if source == "stdout" else ["(stderr)"]
                else:
                    diff = ds.line_diff(text, line)
                if not diff:
                    matched += 1
                    wildcard = False
                    break
                # stdout must follow the docs; stderr lines the docs leave out are passed over.
                if not wildcard and source == "stdout":
                    failures.append(f"`{command[:80]}`: " + "; ".join(diff))
                    return failures
        if not published:
            ctx.publish(pub_channel)
        if long_running:
            return failures
        try:
            code = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            failures.append(f"`{command[:80]}` still running after 20 s; printed {out.seen}")
            return failures
        out.join()
        rest = [line for src, line in out.rest(2) if src == "stdout" and line.strip()]
        if rest and step.shown and not wildcard:
            failures.append(f"`{command[:80]}` printed more than the docs show: {rest}")
        want = int(snip.options.get("exit", "0"))
        if code != want:
            failures.append(f"`{command[:80]}` exited {code}, docs expect {want}; printed {out.seen}")
        return failures
    except AssertionError as e:  # a deadline passed: the snippet did not do what the docs say
        failures.append(f"`{command[:80]}`: {e}; printed {out.seen}")
        return failures
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        if "expect" in snip.options:
            m = re.fullmatch(r'contains\s+"(.*)"', snip.options["expect"])
            assert m, f"bad expect: {snip.options['expect']!r}"
            out.join(2)
            if m.group(1) not in "\n".join(out.seen):
                failures.append(f"output does not contain {m.group(1)!r}: {out.seen}")


def run_unordered(ctx, proc, out, command, expect, snip) -> list[str]:
    """`order: any`: the command's stdout, once it exited, matches the shown lines as a set."""
    try:
        code = proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        return [f"`{command[:80]}` still running after 20 s"]
    out.join()
    printed = [line for src, line in out.rest(2) if src == "stdout" and line.strip()]
    failures = []
    for kind, text in expect:
        if kind != "out":
            continue
        hit = next((line for line in printed if not ds.line_diff(text, line)), None)
        if hit is None:
            failures.append(f"`{command[:80]}`: no line like {text!r} in {printed}")
        else:
            printed.remove(hit)
    if printed:
        failures.append(f"`{command[:80]}` printed more than the docs show: {printed}")
    if code != int(snip.options.get("exit", "0")):
        failures.append(f"`{command[:80]}` exited {code}")
    return failures


def run_snippet(snip: ds.Snippet, tmp_path: Path) -> list[str]:
    """Starts the hub the marker asks for and runs the snippet; returns the failures."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    link = bindir / "events-hub"
    if not link.exists():
        link.symlink_to(hub_binary())
    hub_env = dict(kv.split("=", 1) for kv in snip.options.get("hub-env", "").split(",") if kv)
    with running_hub(tmp_path, extra_env=hub_env,
                     args=hub_args(snip.options.get("hub", "default"), tmp_path)) as hub:
        token = hub.mint_token("alice", "READ_ONLY,EVENTS_PUBLISH")
        env = {
            **hub.env,
            "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}",
            "TOKEN": token,
            "EVENTS_HUB_TOKEN": token,
            "READ_ONLY_TOKEN": hub.mint_token("reader", "READ_ONLY"),
            "READER": hub.mint_token("reader", "READ_ONLY"),
            "ADMIN": hub.mint_token("admin", "EVENTS_ADMIN"),
            "EVENTS_HUB_URL": hub.http,
            "PYTHONUNBUFFERED": "1",
            "NODE_PATH": str(E2E_DIR / "node_modules"),
            "NO_COLOR": "1",
        }
        if "unset" in snip.options:
            env.pop(snip.options["unset"], None)
        cwd = REPO_ROOT
        if "save" in snip.options:
            cwd = tmp_path / "work"
            cwd.mkdir(exist_ok=True)
            (cwd / snip.options["save"]).write_text(snip.text + "\n")
        probe, _, epoch = open_socket(hub, token, "pdfm", "127.0.0.3")  # reads the epoch
        probe.close()
        ctx = Context(hub, env, cwd, epoch, admin=env["ADMIN"],
                      live_epoch=snip.options.get("epoch") == "live")
        poll_until(lambda: not ctx.clients(), LINE_DEADLINE, "the probe socket to close")
        client_id = None
        try:
            for seed in filter(None, snip.options.get("seed", "").split(",")):
                channel, _, count = seed.strip().partition("*")
                for _ in range(int(count or 1)):
                    ctx.publish(channel)
            if "event-id" in snip.options:
                # A 64-hex id in a command is the id of this event of the live hub.
                channel, _, seq = snip.options["event-id"].partition(":")
                page = json.loads(ds_curl(hub, env["TOKEN"],
                                             f"/v1/events?event_type={channel}&since={int(seq) - 1}&limit=1"))
                ctx.event_id = page["events"][0]["id"]
            if "socket" in snip.options:
                ws, client_id, _ = open_socket(hub, token, snip.options["socket"], "127.0.0.2")
                ctx.held.append((ws, client_id))
            if "hold" in snip.options:
                ws, cid, _ = open_socket(hub, token, snip.options["hold"], "127.0.0.1")
                ctx.held.append((ws, cid))
            failures: list[str] = []
            setup = ""
            for step in steps_of(snip):
                if re.match(r"^(export\s+)?[A-Za-z_][A-Za-z0-9_]*=", step.command) and not step.lines:
                    setup = f"{setup}\n{ctx.substitute(step.command, client_id)}"
                    if "$(" not in step.command:
                        continue
                failures += run_step(ctx, snip, step, setup, client_id)
                if failures:
                    break
            return failures
        finally:
            for ws, _ in ctx.held:
                ws.close()


RUNNABLE = [s for s in SNIPPETS if s.skip is None]


@pytest.mark.parametrize("snip", RUNNABLE, ids=[s.id for s in RUNNABLE])
def test_doc_snippet(snip: ds.Snippet, tmp_path: Path):
    failures = run_snippet(snip, tmp_path)
    assert not failures, f"{snip.file}:{snip.line} ({snip.name}):\n" + "\n".join(failures)


SKIPPED = [s for s in SNIPPETS if s.skip is not None]


@pytest.mark.parametrize("snip", SKIPPED, ids=[s.id for s in SKIPPED])
def test_doc_snippet_skipped(snip: ds.Snippet):
    pytest.skip(f"{snip.file}:{snip.line}: {snip.skip}")


# --------------------------------------------------------------------------- #
# The runner catches rot                                                        #
# --------------------------------------------------------------------------- #


def _snippet(name: str) -> ds.Snippet:
    found = [s for s in SNIPPETS if s.name == name]
    assert found, f"no snippet named {name!r}"
    return found[0]


@pytest.mark.parametrize("name,mutate", [
    pytest.param("publish-curl", lambda t: t.replace("/v1/events", "/v1/event"), id="curl-wrong-path"),
    pytest.param("publish-curl", lambda t: t.replace("-H", "--headr", 1), id="curl-wrong-flag"),
    pytest.param("publish-curl", lambda t: t.replace('"event_type":"pdfm"', '"event_type":"nope"'),
                 id="curl-wrong-channel"),
    pytest.param("cli-demo", lambda t: t.replace("--body", "--bdy"), id="cli-wrong-flag"),
    pytest.param("subscribe-websocat", lambda t: t.replace("/v1/ws/subscribe", "/v1/ws/subscr"),
                 id="websocat-wrong-path"),
    # The guide's old spelling: websockets 14 and later refuse `extra_headers=`.
    pytest.param("python-client", lambda t: t.replace("additional_headers=", "extra_headers="),
                 id="python-old-api"),
    pytest.param("node-client", lambda t: t.replace('"ping"', '"pings"'), id="node-wrong-message"),
])
def test_runner_reports_a_rotten_snippet(name, mutate, tmp_path: Path):
    good = _snippet(name)
    bad = ds.Snippet(good.file, good.line, good.name, good.lang, mutate(good.text),
                     good.options, output=good.output)
    assert bad.text != good.text
    assert run_snippet(bad, tmp_path), "the runner passed a broken snippet"


def test_an_unmarked_client_snippet_is_reported(tmp_path: Path):
    doc = tmp_path / "probe.md"  # an absolute path: collect() reads it as is
    doc.write_text("Text.\n\n```sh\ncurl -s http://127.0.0.1:8080/healthz\n```\n\n"
                   "```toml\n[server]\nlisten = \"0.0.0.0:8080\"\n```\n")
    _, problems = ds.collect([str(doc)])
    assert len(problems) == 1 and "unmarked client snippet" in problems[0], problems


def test_runner_reports_changed_output_shape(tmp_path: Path):
    good = _snippet("publish-curl")
    shown = ds.Block(good.output.file, good.output.line, good.output.lang,
                     good.output.text.replace('"recipients"', '"receivers"'))
    bad = ds.Snippet(good.file, good.line, good.name, good.lang, good.text, good.options,
                     output=shown)
    assert run_snippet(bad, tmp_path), "the runner missed a renamed key"
