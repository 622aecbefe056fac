"""CloudEvents 1.0 end to end, with the CloudEvents Python SDK (PyPI `cloudevents` 2.x,
repository cloudevents/sdk-python) on both sides of a real hub:

- publishing: the SDK builds the requests. Structured mode with
  `cloudevents/core/bindings/http.py` `to_structured` (the body is
  `cloudevents/core/formats/json.py` `JSONFormat.write`), binary mode with `to_binary` (`ce-`
  headers, the data as the body). The SDK has no batch writer, so the batch is the JSON array
  of SDK-written events that cloudevents/spec `cloudevents/formats/json-format.md` §4 defines,
  sent as `application/cloudevents-batch+json`.
- subscribing: a `websockets` client offers `cloudevents.json`
  (cloudevents/spec `cloudevents/bindings/websockets-protocol-binding.md` §1.4), and every
  frame it reads is parsed by the SDK's `JSONFormat.read`, which checks the required
  attributes and the extension names, and validated against asyncapi.json's `CloudEvent`.

Every response is validated against openapi.json as in test_api_schemas.py.

Run:  EVENTS_HUB_BIN=target/debug/events-hub pytest -q tests/e2e/test_cloudevents.py
"""

from __future__ import annotations

import json

import pytest
from cloudevents.core.bindings import http as ce_http
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from conftest import Hub
from test_api_schemas import TIMEOUT, api, check_frame

FORMAT = JSONFormat()
PUBLISH = "/v1/events?event_type=pdfm"


def vm_started(n: int, **attributes) -> CloudEvent:
    """An event as a producer would make it with the SDK (`id` and `time` set by it unless given)."""
    return CloudEvent({"type": "com.example.vm.started", "source": "/fleet/host-7",
                       "subject": f"vm/{n}", "datacontenttype": "application/json", **attributes},
                      {"vm_id": n, "state": "RUNNING"})


def post(hub: Hub, token: str, message: ce_http.HTTPMessage, status: int = 202) -> dict:
    return api(hub, "POST", PUBLISH, status, token=token, raw=message.body,
               headers=message.headers)


def batch(events: list[CloudEvent]) -> ce_http.HTTPMessage:
    """json-format.md §4: a JSON array of events in the JSON format, its own media type."""
    body = b"[" + b",".join(FORMAT.write(e) for e in events) + b"]"
    return ce_http.HTTPMessage(headers={"content-type": "application/cloudevents-batch+json"},
                               body=body)


def receive(ws) -> CloudEvent:
    """The next frame: valid against asyncapi.json, and a CloudEvent the SDK reads."""
    text = ws.recv(timeout=TIMEOUT)
    check_frame(json.loads(text), "CloudEvent")
    event = FORMAT.read(None, text)
    assert event.get_specversion() == "1.0"
    return event


def subscribe(hub: Hub, token: str):
    return connect(f"{hub.ws}/v1/ws/subscribe?event_types=pdfm,health",
                   subprotocols=["cloudevents.json"],
                   additional_headers={"Authorization": f"Bearer {token}"})


def test_sdk_made_requests_in_every_form_reach_a_cloudevents_json_subscriber(
        hub: Hub, reader_token: str, publisher_token: str):
    with subscribe(hub, reader_token) as ws:
        assert ws.subprotocol == "cloudevents.json"
        welcome = receive(ws)
        assert welcome.get_type() == "events-hub.welcome"
        assert welcome.get_source() == "/events-hub/global"
        epoch = str(welcome.get_data()["epoch"])

        sent = [vm_started(1, id="evt-1"), vm_started(2, id="evt-2"), vm_started(3, id="evt-3"),
                vm_started(4, id="evt-4")]
        receipts = [post(hub, publisher_token, ce_http.to_structured(sent[0], FORMAT)),
                    post(hub, publisher_token, batch(sent[1:3])),
                    post(hub, publisher_token, ce_http.to_binary(sent[3], FORMAT))]
        ids = [i for r in receipts for i in r["ids"]]
        assert len(ids) == 4 and all(r["repeated"] == 0 for r in receipts)

        sequences = []
        for original, hub_id in zip(sent, ids):
            event = receive(ws)
            assert event.get_id() == hub_id
            assert event.get_type() == original.get_type()
            assert event.get_source() == "/events-hub/pdfm"
            assert event.get_subject() == original.get_subject()
            assert event.get_data() == original.get_data()
            assert event.get_datacontenttype() == "application/json"
            assert event.get_extension("originsource") == "/fleet/host-7"
            assert event.get_extension("originid") == original.get_id()
            assert event.get_extension("epoch") == epoch
            sequences.append(event.get_extension("sequence"))
        assert sequences == sorted(sequences) and sequences[0] == "00000000000000000001"
        assert int(sequences[-1]) == 4

        # The hub's own frames are CloudEvents too; commands stay the hub's JSON.
        ws.send(json.dumps({"event_type": "health", "message": "ping", "id": "p-1"}))
        pong = receive(ws)
        assert pong.get_type() == "events-hub.pong" and pong.get_extension("refid") == "p-1"
        ws.send("{nope")
        assert receive(ws).get_type() == "events-hub.error"


def test_a_retried_cloudevent_publishes_nothing_twice(hub: Hub, publisher_token: str):
    event = vm_started(7)
    first = post(hub, publisher_token, ce_http.to_structured(event, FORMAT))
    again = post(hub, publisher_token, ce_http.to_binary(event, FORMAT))
    assert again["ids"] == first["ids"] and again["repeated"] == 1
    page = api(hub, "GET", "/v1/events?event_type=pdfm", 200,
               token=hub.mint_token("history", "READ_ONLY"))
    assert [e["origin"]["id"] for e in page["events"]] == [event.get_id()]


def without(message: ce_http.HTTPMessage, attribute: str | None = None, **changes) -> bytes:
    """An SDK-written structured body with one attribute taken out or changed (the SDK itself
    refuses to make such an event)."""
    value = json.loads(message.body)
    if attribute:
        del value[attribute]
    return json.dumps({**value, **changes}).encode()


@pytest.mark.parametrize("broken,says", [
    (lambda m: m.body[:-5], "not a CloudEvent"),
    (lambda m: without(m, "source"), "`source` is missing"),
    (lambda m: without(m, "id"), "`id` is missing"),
    (lambda m: without(m, specversion="0.3"), "specversion \"0.3\" is not supported"),
    (lambda m: without(m, data=[1, 2]), "must be a JSON object"),
])
def test_a_broken_cloudevent_is_refused_and_nothing_is_published(
        hub: Hub, publisher_token: str, broken, says: str):
    message = ce_http.to_structured(vm_started(1), FORMAT)
    refusal = api(hub, "POST", PUBLISH, 400, token=publisher_token, raw=broken(message),
                  headers=message.headers)
    assert refusal["error"] == "bad_request" and says in refusal["message"], refusal
    page = api(hub, "GET", "/v1/events?event_type=pdfm", 200,
               token=hub.mint_token("history", "READ_ONLY"))
    assert page["events"] == []


def test_binary_mode_with_data_that_is_not_json_is_415(hub: Hub, publisher_token: str):
    text = CloudEvent({"type": "com.example.note", "source": "/notes",
                       "datacontenttype": "text/plain"}, "VM 42 started")
    message = ce_http.to_binary(text, FORMAT)
    refusal = api(hub, "POST", PUBLISH, 415, token=publisher_token, raw=message.body,
                  headers=message.headers)
    assert "is not JSON" in refusal["message"], refusal


def test_the_shutdown_notice_is_a_cloudevent(hub: Hub, reader_token: str):
    with subscribe(hub, reader_token) as ws:
        receive(ws)
        hub.proc.terminate()  # SIGTERM; the fixture's stop() then collects exit code 0
        notice = receive(ws)
        assert notice.get_type() == "events-hub.server_shutdown"
        assert notice.get_data()["reason"] == "the hub is shutting down"
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=TIMEOUT)
        assert closed.value.rcvd.code == 1001
