"""End-to-end: the built events-hub binary driven by the clients of the guides
(websocat, wscat, the Python `websockets` snippet, curl), typed as a user would.

Run:  scripts/install-test-deps.sh && cargo build --release && pytest -q tests/e2e
"""

from __future__ import annotations

import json
import re
import sys
import time

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from conftest import (
    E2E_DIR,
    LINE_TIMEOUT,
    Hub,
    assert_envelope,
    assert_welcome,
    curl,
    parse_frame,
    require_tool,
    run_client,
)

VM_EVENT = {
    "event_type": "pdfm",
    "message": "VM_STATE_CHANGED",
    "body": {
        "previous_state": "suspended",
        "current_state": "resuming",
        "vm_id": "fb83295e-0ccb-46b1-8205-b03997f82b00",
    },
}
MAINTENANCE_EVENT = {
    "event_type": "global",
    "message": "MAINTENANCE_WINDOW",
    "body": {"starts_in_minutes": 15},
}
CONFLICT_MESSAGE = "IP address 127.0.0.1 already has an active WebSocket connection"
# The handshake a browser/wscat would send, typed with curl.
HANDSHAKE = [
    "-H", "Connection: Upgrade",
    "-H", "Upgrade: websocket",
    "-H", "Sec-WebSocket-Version: 13",
    "-H", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
]


def websocat(url: str, token: str) -> list[str]:
    """The guide's command: websocat "<url>" -H "Authorization: Bearer <TOKEN>"."""
    return [require_tool("websocat"), url, "-H", f"Authorization: Bearer {token}"]


def publish_ok(hub: Hub, token: str, event: dict, recipients: int) -> str:
    """Publishes one event with curl; checks 202 and returns the event's id."""
    reply = hub.publish(token, event)
    assert reply.status == 202, reply.raw
    data = reply.json()
    assert data["recipients"] == recipients, reply.raw
    assert len(data["ids"]) == 1 and len(data["ids"][0]) == 64, reply.raw
    return data["ids"][0]


def assert_event(frame: dict, event_id: str, sent: dict) -> None:
    """A broadcast event as received: the publisher's fields, stamped by the hub."""
    assert_envelope(frame)
    assert frame["id"] == event_id, frame
    assert frame["event_type"] == sent["event_type"], frame
    assert frame["message"] == sent["message"], frame
    assert frame["body"] == sent["body"], frame
    assert "client_id" not in frame and "ref_id" not in frame, frame


def assert_error_body(reply, code: int, message: str | None = None) -> dict:
    assert reply.status == code, reply.raw
    assert reply.headers.get("content-type", "").startswith("application/json"), reply.raw
    body = reply.json()
    assert body["code"] == code, reply.raw
    assert isinstance(body["error"], str) and body["error"], reply.raw
    if message is not None:
        assert body["message"] == message, reply.raw
    return body


# --------------------------------------------------------------------------- #


def test_websocat_receives_welcome_then_published_event(hub, reader_token, publisher_token):
    url = f"{hub.ws}/api/v1/ws/subscribe?event_types=pdfm,health"
    with run_client(websocat(url, reader_token)) as client:
        assert_welcome(client.next_frame(), ["pdfm", "health", "global"])

        event_id = publish_ok(hub, publisher_token, VM_EVENT, recipients=1)

        assert_event(client.next_frame(), event_id, VM_EVENT)


def test_wscat_receives_welcome_then_published_event(hub, reader_token, publisher_token):
    wscat = require_tool("wscat")
    url = f"{hub.ws}/api/v1/ws/subscribe?event_types=pdfm,health,orchestrator"
    # The guide's command. wscat quits when its stdin ends, so run_client keeps a
    # pipe open; with stdout not a terminal it prints each frame bare, one a line.
    argv = [wscat, "-H", f"Authorization: Bearer {reader_token}", "-c", url]
    with run_client(argv) as client:
        assert_welcome(client.next_frame(), ["pdfm", "health", "orchestrator", "global"])

        orchestrator_event = {
            "event_type": "orchestrator",
            "message": "HOST_HEALTH_UPDATE",
            "body": {"host_id": "445fb9aefa6914be7d7575ba8fe96d7cebfe2b3c0001442b7628a9ae5fa588d5",
                     "state": "healthy"},
        }
        first = publish_ok(hub, publisher_token, VM_EVENT, recipients=1)
        second = publish_ok(hub, publisher_token, orchestrator_event, recipients=1)

        assert_event(client.next_frame(), first, VM_EVENT)
        assert_event(client.next_frame(), second, orchestrator_event)


def test_python_guide_snippet_ping_gets_pong(hub, reader_token):
    env = {"DEVOPS_TOKEN": reader_token, "DEVOPS_HOST": hub.ws, "E2E_CLIENT_TIMEOUT": "15"}
    argv = [sys.executable, "-u", str(E2E_DIR / "guide_python_client.py")]
    with run_client(argv, env=env, name="python guide snippet") as client:
        assert client.out.next_line() == "Connected to Events Hub"
        welcome = client.next_frame(prefix="Event received: ")
        client_id = assert_welcome(welcome, ["pdfm", "health", "global"])

        sent = json.loads(client.expect_prefix("Ping sent: "))
        assert sent["type"] == "health" and sent["message"] == "ping", sent
        assert "event_type" not in sent, "the guide's snippet uses the key `type`"

        pong = client.next_frame(prefix="Event received: ")
        assert_envelope(pong)
        assert pong["event_type"] == "health", pong
        assert pong["message"] == "pong", pong
        assert pong["ref_id"] == sent["id"], pong
        assert pong["client_id"] == client_id, pong
        assert pong["id"] != welcome["id"], pong

        assert client.out.next_line() == "Pong received, closing"
        assert client.wait_exit() == 0, client.err.rest()
        assert client.out.rest() == []


def test_websocat_typed_client_id_ping_and_error_frames(hub, reader_token):
    # Channel names are case-insensitive; unknown ones are reported, not fatal.
    url = f"{hub.ws}/api/v1/ws/subscribe?event_types=system,Health,bogus"
    with run_client(websocat(url, reader_token)) as client:
        welcome = client.next_frame()
        client_id = assert_welcome(welcome, ["system", "health", "global"])
        assert welcome["body"]["ignored_event_types"] == ["bogus"], welcome

        # The guide's client-id lookup, typed as shown (key `type`).
        client.type_line('{"type": "system", "message": "client-id", "id": "request-123"}')
        reply = client.next_frame()
        assert_envelope(reply)
        assert (reply["ref_id"], reply["event_type"], reply["message"]) == \
            ("request-123", "system", "client-id"), reply
        assert reply["body"] == {"client-id": client_id}, reply
        assert reply["client_id"] == client_id, reply

        # The guide's health flow (key `event_type`).
        client.type_line('{"event_type": "health", "id": "ping-1", "message": "ping"}')
        pong = client.next_frame()
        assert_envelope(pong)
        assert (pong["ref_id"], pong["event_type"], pong["message"], pong["client_id"]) == \
            ("ping-1", "health", "pong", client_id), pong
        assert "body" not in pong, pong

        # A request on a channel the socket does not have, then garbage: error frames,
        # and the socket stays usable.
        client.type_line('{"event_type": "pdfm", "message": "ping", "id": "x-1"}')
        error = client.next_frame()
        assert_envelope(error)
        assert (error["ref_id"], error["event_type"], error["message"], error["client_id"]) == \
            ("x-1", "global", "error", client_id), error
        assert "pdfm" in error["body"]["error"], error

        client.type_line("not json")
        error = client.next_frame()
        assert_envelope(error)
        assert (error["event_type"], error["message"], error["client_id"]) == \
            ("global", "error", client_id), error
        assert isinstance(error["body"]["error"], str) and error["body"]["error"], error

        client.type_line('{"type": "health", "message": "ping"}')
        pong = client.next_frame()
        assert pong["message"] == "pong", pong
        assert re.fullmatch(r"[0-9a-f]{64}", pong["ref_id"]), pong  # fresh id without `id`


def test_curl_unsubscribe_then_only_global_arrives(hub, reader_token, publisher_token):
    url = f"{hub.ws}/api/v1/ws/subscribe?event_types=pdfm,health"
    with run_client(websocat(url, reader_token)) as client:
        client_id = assert_welcome(client.next_frame(), ["pdfm", "health", "global"])

        # The guide's command, word for word.
        reply = curl(
            "-X", "POST", f"{hub.http}/v1/ws/unsubscribe",
            "-H", f"Authorization: Bearer {reader_token}",
            "-H", "Content-Type: application/json",
            "-d", json.dumps({"client_id": client_id, "event_types": ["pdfm"]}, indent=2),
        )
        assert reply.status == 200, reply.raw
        body = reply.json()
        assert body["message"] == "Successfully unsubscribed from event types", body
        assert body["unsubscribed"] == ["pdfm"], body
        assert "pdfm" not in body["remaining_subscriptions"], body
        assert "global" in body["remaining_subscriptions"], body
        assert sorted(body["remaining_subscriptions"]) == ["global", "health"], body

        # Removal is in force once the 200 is sent: nobody gets the pdfm event...
        publish_ok(hub, publisher_token, VM_EVENT, recipients=0)
        # ...and the global one, published after it, is the next frame on the socket.
        global_id = publish_ok(hub, publisher_token, MAINTENANCE_EVENT, recipients=1)

        assert_event(client.next_frame(), global_id, MAINTENANCE_EVENT)
        # The socket stayed open: the client is still running.
        assert client.proc.poll() is None, client.err.rest()


def test_unsubscribe_someone_elses_client_is_forbidden(hub, reader_token, publisher_token):
    url = f"{hub.ws}/v1/ws/subscribe?event_types=pdfm"
    with run_client(websocat(url, reader_token)) as client:
        client_id = assert_welcome(client.next_frame(), ["pdfm", "global"])

        bob = hub.mint_token("bob", "READ_ONLY")
        reply = curl(
            "-X", "POST", f"{hub.http}/v1/ws/unsubscribe",
            "-H", f"Authorization: Bearer {bob}",
            "-H", "Content-Type: application/json",
            "-d", json.dumps({"client_id": client_id, "event_types": ["pdfm"]}),
        )
        assert_error_body(reply, 403)

        # Alice still gets pdfm events.
        event_id = publish_ok(hub, publisher_token, VM_EVENT, recipients=1)
        assert_event(client.next_frame(), event_id, VM_EVENT)


def test_second_connection_from_same_ip_gets_409(hub, reader_token, publisher_token):
    url = f"{hub.ws}/api/v1/ws/subscribe?event_types=pdfm"
    with run_client(websocat(url, reader_token), name="first websocat") as first:
        assert_welcome(first.next_frame(), ["pdfm", "global"])

        # A second websocat from the same IP is refused with 409 and prints nothing.
        with run_client(websocat(url, reader_token), name="second websocat") as second:
            assert second.wait_exit() != 0
            assert second.out.rest() == []
            assert "409" in "\n".join(second.err.rest()), second.err.seen

        # The same handshake typed with curl shows the status and the error body.
        reply = curl(*HANDSHAKE, "-H", f"Authorization: Bearer {reader_token}",
                     f"{hub.http}/api/v1/ws/subscribe?event_types=pdfm")
        assert_error_body(reply, 409, CONFLICT_MESSAGE)

        # The existing connection was kept.
        event_id = publish_ok(hub, publisher_token, MAINTENANCE_EVENT, recipients=1)
        assert_event(first.next_frame(), event_id, MAINTENANCE_EVENT)

        # Ending the first session (stdin EOF: websocat sends a close frame) frees the slot.
        first.proc.stdin.close()
        assert first.wait_exit() == 0, first.err.rest()

    deadline = time.monotonic() + LINE_TIMEOUT
    while True:
        with run_client(websocat(url, reader_token), name="third websocat") as third:
            line = third.out.next_line()
            if line is not None:
                assert_welcome(parse_frame(line), ["pdfm", "global"])
                break
            third.wait_exit()
            stderr = "\n".join(third.err.rest())
            assert "409" in stderr, stderr
            assert time.monotonic() < deadline, "slot still taken after the first socket closed"


def test_no_token_is_401_before_any_upgrade(hub):
    url = f"{hub.http}/api/v1/ws/subscribe?event_types=pdfm"
    reply = curl(*HANDSHAKE, url)
    body = assert_error_body(reply, 401)
    assert reply.headers.get("www-authenticate", "").startswith("Bearer"), reply.raw
    assert body["message"], body

    bad = curl(*HANDSHAKE, "-H", "Authorization: Bearer not-a-jwt", url)
    assert_error_body(bad, 401)

    # websocat without a token: refused, nothing printed.
    argv = [require_tool("websocat"), f"{hub.ws}/api/v1/ws/subscribe?event_types=pdfm"]
    with run_client(argv) as client:
        assert client.wait_exit() != 0
        assert client.out.rest() == []
        assert "401" in "\n".join(client.err.rest()), client.err.seen


def test_sigterm_sends_shutdown_and_closes_with_1001(hub, reader_token):
    url = f"{hub.ws}/v1/ws/subscribe?event_types=pdfm"
    headers = {"Authorization": f"Bearer {reader_token}"}
    with connect(url, additional_headers=headers, open_timeout=LINE_TIMEOUT) as ws:
        assert_welcome(json.loads(ws.recv(timeout=LINE_TIMEOUT)), ["pdfm", "global"])

        assert hub.stop() == 0, hub.logs()

        notice = json.loads(ws.recv(timeout=LINE_TIMEOUT))
        assert_envelope(notice)
        assert notice["event_type"] == "global", notice
        assert notice["message"] == "SERVER_SHUTDOWN", notice
        try:
            extra = ws.recv(timeout=LINE_TIMEOUT)
            raise AssertionError(f"frame after SERVER_SHUTDOWN: {extra!r}")
        except ConnectionClosed:
            pass
        assert ws.close_code == 1001, (ws.close_code, ws.close_reason)
