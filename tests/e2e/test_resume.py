"""End-to-end: history and resume, and in-band subscriptions (issue 5), on the built
events-hub binary, driven by the clients of the guides: Python `websockets`, websocat,
wscat and curl.

Nothing here sleeps to synchronise. Every step waits for something it can observe: a frame
(read with a deadline), a publish receipt (`recipients` says who was connected), an HTTP
answer.

Run:  cargo build && EVENTS_HUB_BIN=target/debug/events-hub python3 -m pytest -q tests/e2e
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest
from websockets.sync.client import connect

from conftest import (
    HEX64,
    LINE_TIMEOUT,
    TIMESTAMP,
    Hub,
    assert_envelope,
    assert_welcome,
    curl,
    parse_frame,
    require_tool,
    run_client,
    running_hub,
)

# Events carry `seq` (broadcast events) and `epoch` after the keys seed clients know.
EVENT_ORDER = ["id", "ref_id", "event_type", "timestamp", "message", "body", "client_id",
               "seq", "epoch"]
# The handshake a WebSocket client sends, typed with curl, to read a refusal.
HANDSHAKE = [
    "-H", "Connection: Upgrade",
    "-H", "Upgrade: websocket",
    "-H", "Sec-WebSocket-Version: 13",
    "-H", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
]


def vm_event(n: int, channel: str = "pdfm") -> dict:
    return {"event_type": channel, "message": "VM_STATE_CHANGED",
            "body": {"vm_id": f"vm-{n}", "current_state": "running", "n": n}}


def publish(hub: Hub, token: str, events: dict | list, recipients: int) -> list[str]:
    """Publishes with curl; checks the 202 receipt and returns the ids in batch order."""
    reply = hub.publish(token, events)
    assert reply.status == 202, reply.raw
    data = reply.json()
    assert data["recipients"] == recipients, reply.raw
    count = len(events) if isinstance(events, list) else 1
    assert len(data["ids"]) == count and all(HEX64.match(i) for i in data["ids"]), reply.raw
    return data["ids"]


def assert_event(frame: dict, sent: dict, event_id: str, epoch: int,
                 seq: int | None) -> None:
    """A published event as received: the seed keys in their order, then `seq` (broadcast
    events only) and `epoch`; the publisher's fields unchanged."""
    keys = list(frame)
    assert keys == [k for k in EVENT_ORDER if k in frame], f"key order {keys}"
    assert HEX64.match(frame["id"]) and TIMESTAMP.match(frame["timestamp"]), frame
    assert frame["id"] == event_id, frame
    assert (frame["event_type"], frame["message"], frame["body"]) == \
        (sent["event_type"], sent["message"], sent["body"]), frame
    assert frame["epoch"] == epoch, frame
    if seq is None:
        assert "seq" not in frame, frame
    else:
        assert frame["seq"] == seq, frame


def recv(ws) -> dict:
    return json.loads(ws.recv(timeout=LINE_TIMEOUT))


def websocat(url: str, token: str) -> list[str]:
    return [require_tool("websocat"), url, "-H", f"Authorization: Bearer {token}"]


def wscat_frame(client) -> dict:
    """Next frame printed by wscat. Once something was typed, wscat reprints its `> ` input
    prompt before the frames it prints, so a line may start with it, or hold nothing else."""
    deadline = time.monotonic() + LINE_TIMEOUT
    while True:
        line = client.expect_prefix("", max(0.0, deadline - time.monotonic())).strip()
        while line.startswith(">"):
            line = line[1:].lstrip()
        if line:
            return parse_frame(line)


def history(hub: Hub, token: str | None, query: str, prefix: str = "") -> tuple[int, dict]:
    """`curl "…/v1/events?<query>"`, as a polling client would."""
    auth = ["-H", f"Authorization: Bearer {token}"] if token else []
    reply = curl(*auth, f"{hub.http}{prefix}/v1/events?{query}")
    assert reply.headers.get("content-type", "").startswith("application/json"), reply.raw
    return reply.status, reply.json()


@pytest.fixture
def hub_without_pdfm_history(tmp_path: Path) -> Iterator[Hub]:
    """A hub whose `pdfm` keeps no history (set from the environment), other channels as
    by default."""
    with running_hub(tmp_path, {"EVENTS_HUB__HISTORY__CHANNELS__PDFM__MAX_EVENTS": "0"}) as instance:
        yield instance


# --------------------------------------------------------------------------- #
# (a) Python websockets: away, then back with since + epoch                    #
# --------------------------------------------------------------------------- #


def test_python_client_resumes_every_missed_event_then_continues_live(
        hub, reader_token, publisher_token):
    headers = {"Authorization": f"Bearer {reader_token}"}
    url = f"{hub.ws}/v1/ws/subscribe?event_types=pdfm"

    with connect(url, additional_headers=headers, open_timeout=LINE_TIMEOUT) as ws:
        welcome = recv(ws)
        assert_welcome(welcome, ["pdfm", "global"])
        epoch = welcome["body"]["epoch"]
        assert isinstance(epoch, int) and 0 < epoch < 2**53, welcome
        assert welcome["body"]["positions"] == {"pdfm": 0, "global": 0}, welcome
        assert "recovered" not in welcome["body"], welcome

        sent = [vm_event(n) for n in range(3)]
        ids = [publish(hub, publisher_token, event, recipients=1)[0] for event in sent]
        for seq, (event, event_id) in enumerate(zip(sent, ids), start=1):
            assert_event(recv(ws), event, event_id, epoch, seq)
        last_seq = 3
    # The hub lets a client go before it answers the close, so it is gone now:
    # the receipts below say nobody got these events.

    away = [vm_event(3), vm_event(4), vm_event(0, "orchestrator"), vm_event(5), vm_event(6)]
    away_ids = publish(hub, publisher_token, away, recipients=0)
    missed = [(e, i) for e, i in zip(away, away_ids) if e["event_type"] == "pdfm"]

    resume = f"{url}&since=pdfm:{last_seq}&epoch={epoch}"
    with connect(resume, additional_headers=headers, open_timeout=LINE_TIMEOUT) as ws:
        welcome = recv(ws)
        assert_welcome(welcome, ["pdfm", "global"])
        body = welcome["body"]
        assert body["recovered"] is True, welcome
        assert "reason" not in body and "unrecovered" not in body, welcome
        assert body["epoch"] == epoch, welcome
        assert body["positions"]["pdfm"] == last_seq, welcome

        # Every missed pdfm event, in order, numbered on pdfm alone (the orchestrator event
        # in the batch has its own numbering and is not for this socket).
        for seq, (event, event_id) in enumerate(missed, start=last_seq + 1):
            assert_event(recv(ws), event, event_id, epoch, seq)

        # Then live, with nothing repeated at the seam.
        live = vm_event(7)
        live_id = publish(hub, publisher_token, live, recipients=1)[0]
        assert_event(recv(ws), live, live_id, epoch, last_seq + len(missed) + 1)


def test_resume_from_another_epoch_starts_live_and_says_why(hub, reader_token, publisher_token):
    publish(hub, publisher_token, [vm_event(1), vm_event(2)], recipients=0)
    headers = {"Authorization": f"Bearer {reader_token}"}
    url = f"{hub.ws}/v1/ws/subscribe?event_types=pdfm&since=pdfm:1&epoch=1"
    with connect(url, additional_headers=headers, open_timeout=LINE_TIMEOUT) as ws:
        welcome = recv(ws)
        assert_welcome(welcome, ["pdfm", "global"])
        body = welcome["body"]
        assert body["recovered"] is False, welcome
        assert body["unrecovered"] == ["pdfm"], welcome
        assert f"epoch 1 is not the hub's epoch {body['epoch']}" in body["reason"], welcome
        # Live from the newest event: no replay of seq 2.
        assert body["positions"]["pdfm"] == 2, welcome
        live = vm_event(3)
        live_id = publish(hub, publisher_token, live, recipients=1)[0]
        assert_event(recv(ws), live, live_id, body["epoch"], 3)


def test_websocat_resumes_with_last_event_id(hub, reader_token, publisher_token):
    sent = [vm_event(n) for n in range(3)]
    ids = publish(hub, publisher_token, sent, recipients=0)
    url = f"{hub.ws}/v1/ws/subscribe?event_types=pdfm&last_event_id={ids[0]}"
    with run_client(websocat(url, reader_token)) as client:
        welcome = client.next_frame()
        assert_welcome(welcome, ["pdfm", "global"])
        assert welcome["body"]["recovered"] is True, welcome
        assert welcome["body"]["positions"]["pdfm"] == 1, welcome
        epoch = welcome["body"]["epoch"]
        for seq in (2, 3):
            assert_event(client.next_frame(), sent[seq - 1], ids[seq - 1], epoch, seq)


def test_resume_requests_that_cannot_be_honoured_are_400_before_the_upgrade(hub, reader_token):
    auth = ["-H", f"Authorization: Bearer {reader_token}"]
    for query, message in [
        ("event_types=pdfm&since=pdfm:x",
         'since: "x" in "pdfm:x" is not a seq (a whole number >= 0)'),
        ("event_types=pdfm&since=orchestrator:3",
         'since names "orchestrator", which this connection does not subscribe to; '
         "add it to event_types"),
        ("event_types=pdfm&since=pdfm:1,PDFM:2", 'since: "pdfm" is given twice'),
        ("event_types=pdfm&since=pdfm:1&epoch=abc",
         'epoch "abc" is not a number; send the `epoch` of the events you have'),
    ]:
        reply = curl(*HANDSHAKE, *auth, f"{hub.http}/v1/ws/subscribe?{query}")
        assert reply.status == 400, reply.raw
        assert reply.json() == {"code": 400, "error": "bad_request", "message": message}, \
            reply.raw


def test_a_channel_without_history_starts_live_while_the_others_replay(
        hub_without_pdfm_history):
    hub = hub_without_pdfm_history
    reader = hub.mint_token("alice", "READ_ONLY")
    publisher = hub.mint_token("publisher", "EVENTS_PUBLISH")
    sent = [vm_event(1), vm_event(2, "orchestrator"), vm_event(3), vm_event(4, "orchestrator")]
    ids = publish(hub, publisher, sent, recipients=0)

    status, page = history(hub, reader, "event_type=pdfm")
    assert status == 200, page
    assert (page["oldest_seq"], page["last_seq"], page["events"]) == (None, 2, []), page
    assert page["recovered"] is False and "history is off or expired" in page["reason"], page

    url = (f"{hub.ws}/v1/ws/subscribe?event_types=pdfm,orchestrator"
           f"&since=pdfm:1,orchestrator:1&epoch={page['epoch']}")
    with connect(url, additional_headers={"Authorization": f"Bearer {reader}"},
                 open_timeout=LINE_TIMEOUT) as ws:
        welcome = recv(ws)
        assert_welcome(welcome, ["pdfm", "orchestrator", "global"])
        body = welcome["body"]
        assert (body["recovered"], body["unrecovered"]) == (False, ["pdfm"]), welcome
        assert body["positions"] == {"pdfm": 2, "orchestrator": 1, "global": 0}, welcome
        # orchestrator replays its seq 2; pdfm has nothing to replay and continues live.
        assert_event(recv(ws), sent[3], ids[3], page["epoch"], 2)
        live = vm_event(5)
        live_id = publish(hub, publisher, live, recipients=1)[0]
        assert_event(recv(ws), live, live_id, page["epoch"], 3)


# --------------------------------------------------------------------------- #
# (b) websocat: sysadm's `events` envelope                                     #
# --------------------------------------------------------------------------- #


def test_websocat_subscribes_in_sysadm_envelope_then_receives(hub, reader_token, publisher_token):
    # No event_types: `global` only, like a client that picks its channels after connecting.
    with run_client(websocat(f"{hub.ws}/v1/ws/subscribe", reader_token)) as client:
        welcome = client.next_frame()
        assert_welcome(welcome, ["global"])
        epoch = welcome["body"]["epoch"]

        client.type_line(json.dumps(
            {"namespace": "events", "name": "subscribe", "id": "sampleID", "args": ["pdfm"]}))
        assert client.next_frame() == {
            "namespace": "events", "name": "response", "id": "sampleID",
            "args": {"positions": {"pdfm": 0}, "subscriptions": ["pdfm", "global"]},
        }

        # Live from the answer on.
        event = vm_event(1)
        event_id = publish(hub, publisher_token, event, recipients=1)[0]
        assert_event(client.next_frame(), event, event_id, epoch, 1)

        # Unsubscribe, with a numeric id: answered with that id, as a number.
        client.type_line(json.dumps(
            {"namespace": "events", "name": "unsubscribe", "id": 42, "args": ["pdfm"]}))
        assert client.next_frame() == {
            "namespace": "events", "name": "response", "id": 42,
            "args": {"subscriptions": ["global"], "unsubscribed": ["pdfm"]},
        }
        publish(hub, publisher_token, vm_event(2), recipients=0)

        # A request that cannot be served: an error in the envelope; the socket stays.
        client.type_line(json.dumps(
            {"namespace": "events", "name": "unsubscribe", "id": "x", "args": ["global"]}))
        error = client.next_frame()
        assert (error["namespace"], error["name"], error["id"]) == ("events", "error", "x"), error
        assert "`global` cannot be removed" in error["args"]["error"], error

        notice = {"event_type": "global", "message": "MAINTENANCE", "body": {"in_minutes": 5}}
        notice_id = publish(hub, publisher_token, notice, recipients=1)[0]
        assert_event(client.next_frame(), notice, notice_id, epoch, 1)


# --------------------------------------------------------------------------- #
# (c) wscat: subscribe on the `system` key                                     #
# --------------------------------------------------------------------------- #


def test_wscat_subscribes_on_the_system_key(hub, reader_token, publisher_token):
    wscat = require_tool("wscat")
    url = f"{hub.ws}/api/v1/ws/subscribe?event_types=system"
    argv = [wscat, "-H", f"Authorization: Bearer {reader_token}", "-c", url]
    with run_client(argv) as client:
        welcome = wscat_frame(client)
        client_id = assert_welcome(welcome, ["system", "global"])
        epoch = welcome["body"]["epoch"]

        client.type_line('{"event_type":"system","message":"subscribe","id":"s1",'
                         '"body":{"event_types":["pdfm"]}}')
        answer = wscat_frame(client)
        assert_envelope(answer)
        assert (answer["ref_id"], answer["event_type"], answer["message"],
                answer["client_id"]) == ("s1", "system", "subscribe", client_id), answer
        assert answer["body"] == {"positions": {"pdfm": 0},
                                  "subscriptions": ["system", "pdfm", "global"]}, answer

        event = vm_event(1)
        event_id = publish(hub, publisher_token, event, recipients=1)[0]
        assert_event(wscat_frame(client), event, event_id, epoch, 1)

        # Without a `system` subscription the system key no longer answers; the error
        # points to the envelope that works on any socket.
        client.type_line('{"event_type":"system","message":"unsubscribe","id":"u1",'
                         '"body":{"event_types":"system"}}')
        answer = wscat_frame(client)
        assert (answer["ref_id"], answer["message"]) == ("u1", "unsubscribe"), answer
        assert answer["body"]["subscriptions"] == ["pdfm", "global"], answer
        client.type_line('{"event_type":"system","message":"subscribe","id":"s2",'
                         '"body":{"event_types":["orchestrator"]}}')
        error = wscat_frame(client)
        assert_envelope(error)
        assert (error["ref_id"], error["event_type"], error["message"]) == \
            ("s2", "global", "error"), error
        assert error["body"]["error"] == (
            'not subscribed to "system"; subscribe first with '
            '{"namespace":"events","name":"subscribe","args":["system"]}'), error


# --------------------------------------------------------------------------- #
# (d) curl: GET /v1/events                                                     #
# --------------------------------------------------------------------------- #


def test_curl_reads_the_history_page_by_page(hub, reader_token, publisher_token):
    sent = [vm_event(n) for n in range(1, 6)]
    ids = publish(hub, publisher_token, sent, recipients=0)
    # A targeted event is private to its connection: not kept, and it takes no seq.
    publish(hub, publisher_token, {**vm_event(99), "client_id": str(uuid.uuid4())},
            recipients=0)

    status, page = history(hub, reader_token, "event_type=pdfm&since=1&limit=2")
    assert status == 200, page
    assert list(page) == ["event_type", "epoch", "oldest_seq", "last_seq", "recovered",
                          "next_since", "more", "events"], page
    epoch = page["epoch"]
    assert (page["event_type"], page["oldest_seq"], page["last_seq"]) == ("pdfm", 1, 5), page
    assert (page["recovered"], page["next_since"], page["more"]) == (True, 3, True), page
    for frame, seq in zip(page["events"], (2, 3), strict=True):
        assert_event(frame, sent[seq - 1], ids[seq - 1], epoch, seq)

    # Read on from next_since, here under /api.
    status, page = history(hub, reader_token, "event_type=PDFM&since=3&limit=2", prefix="/api")
    assert status == 200, page
    assert (page["next_since"], page["more"], page["recovered"]) == (5, False, True), page
    for frame, seq in zip(page["events"], (4, 5), strict=True):
        assert_event(frame, sent[seq - 1], ids[seq - 1], epoch, seq)

    status, page = history(hub, reader_token, "event_type=pdfm&since=5")
    assert (status, page["events"], page["next_since"], page["more"]) == (200, [], 5, False), page

    # A cursor from another run of the hub: the page starts at the oldest kept event.
    status, page = history(hub, reader_token, "event_type=pdfm&since=4&limit=1&epoch=7")
    assert status == 200 and page["recovered"] is False, page
    assert page["reason"].startswith("epoch 7 is not the hub's epoch"), page
    assert [e["seq"] for e in page["events"]] == [1], page


def test_curl_history_refusals(hub, reader_token):
    status, body = history(hub, reader_token, "event_type=pdfm&limit=0")
    assert (status, body["error"], body["message"]) == \
        (400, "bad_request", "limit must be 1 to 1000"), body
    status, body = history(hub, reader_token, "since=1")
    assert status == 400 and body["message"].startswith("missing event_type"), body
    status, body = history(hub, reader_token, "event_type=nope")
    assert status == 400 and body["message"].startswith('unknown event_type "nope"'), body
    status, body = history(hub, None, "event_type=pdfm")
    assert (status, body["error"]) == (401, "unauthorized"), body
    publisher_only = hub.mint_token("bot", "EVENTS_PUBLISH")
    status, body = history(hub, publisher_only, "event_type=pdfm")
    assert (status, body["message"]) == (403, "this credential lacks the READ_ONLY claim"), body
