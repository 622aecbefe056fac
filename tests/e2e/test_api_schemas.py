"""The machine-readable API descriptions (docs/openapi.json, docs/asyncapi.json) against real
traffic: the hub is started, driven over WebSocket (Python `websockets`) and HTTP (urllib), and
every frame and response seen is validated with `jsonschema` against the schema the documents
give for it. The documents themselves are checked too: OpenAPI with openapi-spec-validator,
AsyncAPI with the official AsyncAPI 3.0.0 JSON Schema (npm @asyncapi/specs) and structurally
(every `$ref` resolves, every schema is a valid draft-07 schema, every example validates).
And a deliberately wrong frame must fail.

Run:  EVENTS_HUB_BIN=target/debug/events-hub pytest -q tests/e2e/test_api_schemas.py
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.error
import urllib.request
import uuid
from functools import lru_cache
from pathlib import Path

import pytest
from jsonschema import Draft7Validator, Draft202012Validator, ValidationError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7, DRAFT202012
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from conftest import REPO_ROOT, Hub, curl

HANDSHAKE = ["-H", "Connection: Upgrade", "-H", "Upgrade: websocket",
             "-H", "Sec-WebSocket-Version: 13", "-H", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="]

DOCS = REPO_ROOT / "docs"
OPENAPI_URI = "urn:events-hub:openapi"
ASYNCAPI_URI = "urn:events-hub:asyncapi"
TIMEOUT = 10.0


def load(name: str) -> dict:
    return json.loads((DOCS / name).read_text())


@lru_cache(maxsize=None)
def registry() -> Registry:
    return Registry().with_resources([
        (OPENAPI_URI, Resource(contents=load("openapi.json"), specification=DRAFT202012)),
        # AsyncAPI 3.0's default schema format is a superset of JSON Schema draft-07;
        # OpenAPI 3.1's is 2020-12.
        (ASYNCAPI_URI, Resource(contents=load("asyncapi.json"), specification=DRAFT7)),
    ])


def validator(doc_uri: str, pointer: str):
    cls = Draft7Validator if doc_uri == ASYNCAPI_URI else Draft202012Validator
    return cls({"$ref": f"{doc_uri}#{pointer}"}, registry=registry(),
               format_checker=cls.FORMAT_CHECKER)


def frame_validator(name: str) -> Draft202012Validator:
    return validator(ASYNCAPI_URI, f"/components/schemas/{name}")


def check_frame(frame: dict, name: str) -> dict:
    """Validates a frame against its own schema and against the ServerFrame union."""
    frame_validator(name).validate(frame)
    frame_validator("ServerFrame").validate(frame)
    return frame


def check_client_message(message: dict, name: str) -> str:
    frame_validator(name).validate(message)
    return json.dumps(message)


# --------------------------------------------------------------------------- #
# HTTP, validated against the OpenAPI operation's response                      #
# --------------------------------------------------------------------------- #


def response_schema_pointer(path: str, method: str, status: int) -> str:
    """JSON pointer (in openapi.json) of the schema documented for that response."""
    doc = load("openapi.json")
    operation = doc["paths"][path][method]
    assert str(status) in operation["responses"], \
        f"{method.upper()} {path} answered {status}, which openapi.json does not document"
    response = operation["responses"][str(status)]
    base = f"/paths/{path.replace('~', '~0').replace('/', '~1')}/{method}/responses/{status}"
    if "$ref" in response:
        base = response["$ref"].removeprefix("#")
        response = doc["components"]["responses"][base.rsplit("/", 1)[1]]
    assert "application/json" in response["content"], response
    return f"{base}/content/application~1json/schema"


def http(hub: Hub, method: str, path: str, *, token: str | None = None, body=None,
         raw: bytes | None = None, headers: dict | None = None) -> tuple[int, dict, bytes]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(f"{hub.http}{path}", data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    for key, value in (headers or {}).items():
        request.add_header(key, value)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as reply:
            return reply.status, {k.lower(): v for k, v in reply.headers.items()}, reply.read()
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read()


def handshake(hub: Hub, path: str, status: int, token: str | None = None):
    """A WebSocket handshake typed with curl (urllib rewrites `Connection`) that the hub must
    refuse before the upgrade; its error body is validated like `api`'s."""
    auth = ["-H", f"Authorization: Bearer {token}"] if token else []
    reply = curl(f"{hub.http}{path}", *auth, *HANDSHAKE)
    return check(hub, "GET", path, status, reply.status, reply.headers, reply.body.encode())


def api(hub: Hub, method: str, path: str, status: int, *, route: str | None = None, **kwargs):
    """Calls the hub, asserts the status and validates the JSON body against the documented schema."""
    code, headers, body = http(hub, method, path, **kwargs)
    return check(hub, method, path, status, code, headers, body, route)


def check(hub: Hub, method: str, path: str, status: int, code: int, headers: dict, body: bytes,
          route: str | None = None):
    assert code == status, f"{method} {path}: {code} {body!r}"
    assert headers.get("content-type", "").startswith("application/json"), headers
    value = json.loads(body)
    route = route or path.split("?", 1)[0].removeprefix("/api")
    validator(OPENAPI_URI, response_schema_pointer(route, method.lower(), status)).validate(value)
    return value


def recv(ws) -> dict:
    return json.loads(ws.recv(timeout=TIMEOUT))


# --------------------------------------------------------------------------- #
# The documents themselves                                                      #
# --------------------------------------------------------------------------- #


def walk(node, path=""):
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from walk(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk(value, f"{path}/{i}")


def test_openapi_document_is_valid_openapi_3_1():
    openapi_spec_validator = pytest.importorskip("openapi_spec_validator")
    doc = load("openapi.json")
    assert doc["openapi"] == "3.1.0"
    openapi_spec_validator.validate(doc)


def test_asyncapi_document_is_structurally_asyncapi_3():
    doc = load("asyncapi.json")
    assert doc["asyncapi"] == "3.0.0"
    assert doc["info"]["title"] and doc["info"]["version"]
    resolver = registry().resolver()
    # Every $ref resolves.
    for where, node in walk(doc):
        if "$ref" in node and isinstance(node["$ref"], str):
            resolver.lookup(ASYNCAPI_URI + node["$ref"])  # raises when unresolvable
    for name, server in doc["servers"].items():
        assert server["protocol"] in ("ws", "wss"), name
        assert server["host"], name
    for name, channel in doc["channels"].items():
        assert channel["address"].startswith("/"), name
        assert channel["messages"], name
    for name, operation in doc["operations"].items():
        assert operation["action"] in ("send", "receive"), name
        assert operation["channel"]["$ref"].startswith("#/channels/"), name
        channel = operation["channel"]["$ref"].removeprefix("#/channels/")
        for ref in operation["messages"] + operation.get("reply", {}).get("messages", []):
            assert ref["$ref"].startswith(f"#/channels/{channel}/messages/"), (name, ref)
    for name, scheme in doc["components"]["securitySchemes"].items():
        assert scheme["type"] in ("http", "httpApiKey", "apiKey", "userPassword", "X509",
                                  "symmetricEncryption", "asymmetricEncryption", "plain",
                                  "scramSha256", "scramSha512", "gssapi", "oauth2",
                                  "openIdConnect"), name
    for name, schema in doc["components"]["schemas"].items():
        Draft7Validator.check_schema(schema)
        # Keywords draft-07 does not know would be silently ignored by draft-07 tools.
        for where, node in walk(schema):
            assert not {"dependentRequired", "dependentSchemas", "prefixItems", "$defs",
                        "unevaluatedProperties"} & set(node), (name, where)
    codes = {c["code"] for c in doc["channels"]["subscribe"]["x-close-codes"]}
    assert {1001, 1002, 1007, 1008, 1009, 4000, 4001, 4008} <= codes


def asyncapi_metaschema() -> dict:
    """The official AsyncAPI 3.0.0 JSON Schema, from the npm package @asyncapi/specs
    (installed by scripts/install-test-deps.sh)."""
    npm = shutil.which("npm")
    root = subprocess.run([npm, "root", "-g"], capture_output=True, text=True,
                          timeout=30).stdout.strip() if npm else ""
    path = Path(root) / "@asyncapi" / "specs" / "schemas" / "3.0.0-without-$id.json"
    if not path.is_file():
        pytest.fail(f"{path} not found: run scripts/install-test-deps.sh (npm @asyncapi/specs)")
    return json.loads(path.read_text())


def test_asyncapi_document_is_valid_against_the_asyncapi_3_schema():
    metaschema = asyncapi_metaschema()
    Draft7Validator(metaschema).validate(load("asyncapi.json"))
    broken = load("asyncapi.json")
    broken["operations"]["receiveFrames"]["action"] = "listen"
    with pytest.raises(ValidationError):
        Draft7Validator(metaschema).validate(broken)


def test_every_example_validates_against_its_schema():
    asyncapi = load("asyncapi.json")
    for name, message in asyncapi["components"]["messages"].items():
        for example in message.get("examples", []):
            validator(ASYNCAPI_URI, message["payload"]["$ref"].removeprefix("#")).validate(example["payload"])
    for name, schema in asyncapi["components"]["schemas"].items():
        for example in schema.get("examples", []):
            frame_validator(name).validate(example)
    openapi = load("openapi.json")
    for path, item in openapi["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                if "$ref" in response:
                    response = openapi["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
                content = response.get("content", {}).get("application/json")
                if content and "example" in content:
                    validator(OPENAPI_URI, response_schema_pointer(path, method, int(status))) \
                        .validate(content["example"])


def test_the_shared_event_schema_is_the_same_in_both_documents():
    assert load("openapi.json")["components"]["schemas"]["Event"] == \
        load("asyncapi.json")["components"]["schemas"]["Event"]


# --------------------------------------------------------------------------- #
# Wrong frames fail                                                             #
# --------------------------------------------------------------------------- #

GOOD_EVENT = {"id": "f3c6daef46c2c34013523994f2b3add6aed1606352d16a0020e65ac949b7aa2f",
              "event_type": "pdfm", "timestamp": "2026-11-22T18:25:34.113535Z",
              "message": "VM_STATE_CHANGED", "body": {"vm_id": "vm-1"}, "seq": 1,
              "epoch": 1795371931464335}
GOOD_WELCOME = load("asyncapi.json")["components"]["messages"]["welcome"]["examples"][0]["payload"]
GOOD_CLOUDEVENT = load("asyncapi.json")["components"]["messages"]["cloudEvent"]["examples"][0]["payload"]


def test_the_good_frames_the_wrong_ones_are_made_from_pass():
    frame_validator("Event").validate(GOOD_EVENT)
    frame_validator("Welcome").validate(GOOD_WELCOME)
    check_frame(GOOD_CLOUDEVENT, "CloudEvent")


@pytest.mark.parametrize("schema,frame", [
    ("Event", {k: v for k, v in GOOD_EVENT.items() if k != "id"}),
    ("Event", {**GOOD_EVENT, "id": "ABC"}),
    ("Event", {**GOOD_EVENT, "timestamp": "2026-11-22T18:25:34Z"}),
    ("Event", {**GOOD_EVENT, "seq": 0}),
    ("Event", {**GOOD_EVENT, "ref_id": "x"}),
    ("Event", {**GOOD_EVENT, "body": None}),
    ("Welcome", {**GOOD_WELCOME, "body": {**GOOD_WELCOME["body"], "epoch": "1795372066445743"}}),
    ("Welcome", {**GOOD_WELCOME, "message": "hello"}),
    ("Welcome", {**GOOD_WELCOME, "seq": 1}),
    ("Pong", {"id": GOOD_EVENT["id"], "event_type": "health", "timestamp": GOOD_EVENT["timestamp"],
              "message": "pong", "client_id": "19e43d3d-ab87-4813-ab12-0da2ebb4cefb"}),
    ("ErrorFrame", {"id": GOOD_EVENT["id"], "event_type": "global", "timestamp": GOOD_EVENT["timestamp"],
                    "message": "error", "body": {"error": "x"}}),
    ("SysadmResponse", {"namespace": "events", "name": "response", "id": 1}),
    ("CloudEvent", {k: v for k, v in GOOD_CLOUDEVENT.items() if k != "specversion"}),
    ("CloudEvent", {**GOOD_CLOUDEVENT, "specversion": "0.3"}),
    ("CloudEvent", {**GOOD_CLOUDEVENT, "sequence": "5"}),
    ("CloudEvent", {**GOOD_CLOUDEVENT, "epoch": 1795371931464335}),
    ("CloudEvent", {**GOOD_CLOUDEVENT, "source": "/fleet/host-7"}),
    ("CloudEvent", {**GOOD_CLOUDEVENT, "ref_id": "x"}),
    ("Event", {**GOOD_EVENT, "origin": {"source": "/s"}}),
])
def test_a_wrong_frame_fails_validation(schema, frame):
    """Each case is a real frame with one thing wrong (the good ones pass: see below)."""
    with pytest.raises(ValidationError):
        frame_validator(schema).validate(frame)


@pytest.mark.parametrize("schema,message", [
    ("PingRequest", {"event_type": "", "type": "health", "message": "ping"}),
    ("PingRequest", {"event_type": "system", "message": "ping"}),
    ("PingRequest", {"message": "ping"}),
    ("SubscribeRequest", {"event_type": "system", "message": "subscribe", "body": {"event_types": []}}),
    ("SubscribeRequest", {"event_type": "system", "message": "subscribe", "body": {"event_types": " , "}}),
    ("SysadmSubscribe", {"namespace": "events", "name": "subscribe", "type": "x", "args": ["pdfm"]}),
    ("SysadmSubscribe", {"namespace": "events", "name": "subscribe"}),
])
def test_a_message_the_hub_refuses_fails_validation(schema, message):
    with pytest.raises(ValidationError):
        frame_validator(schema).validate(message)


def test_a_wrong_error_body_fails_validation():
    error_body = validator(OPENAPI_URI, "/components/schemas/ErrorBody")
    error_body.validate({"code": 404, "error": "not_found", "message": "x"})
    for wrong in ({"code": "404", "error": "not_found", "message": "x"},
                  {"code": 404, "error": "nope", "message": "x"},
                  {"code": 404, "error": "not_found"},
                  {"code": 404, "error": "not_found", "message": "x", "extra": 1}):
        with pytest.raises(ValidationError):
            error_body.validate(wrong)


# --------------------------------------------------------------------------- #
# Real traffic                                                                  #
# --------------------------------------------------------------------------- #


@pytest.fixture
def admin_token(hub: Hub) -> str:
    return hub.mint_token("admin", "EVENTS_ADMIN")


def test_served_documents_are_the_committed_files(hub: Hub):
    for name in ("openapi.json", "asyncapi.json"):
        for prefix in ("", "/api"):
            code, headers, body = http(hub, "GET", f"{prefix}/{name}")
            assert code == 200
            assert headers["content-type"] == "application/json"
            assert body == (DOCS / name).read_bytes()


def test_websocket_frames_match_the_asyncapi_schemas(hub: Hub, reader_token: str,
                                                     publisher_token: str):
    url = f"{hub.ws}/v1/ws/subscribe?event_types=health,system,pdfm,bogus"
    with connect(url, additional_headers={"Authorization": f"Bearer {reader_token}"}) as ws:
        welcome = check_frame(recv(ws), "Welcome")
        client_id = welcome["body"]["client_id"]
        assert welcome["body"]["ignored_event_types"] == ["bogus"]

        ws.send(check_client_message({"event_type": "health", "message": "ping", "id": "p1"}, "PingRequest"))
        assert check_frame(recv(ws), "Pong")["ref_id"] == "p1"
        ws.send(check_client_message({"type": "HEALTH", "message": " PING "}, "PingRequest"))
        check_frame(recv(ws), "Pong")
        # `event_type` that is not a string gives way to `type`.
        ws.send(check_client_message({"event_type": 1, "type": "health", "message": "ping", "id": "p3"}, "PingRequest"))
        assert check_frame(recv(ws), "Pong")["ref_id"] == "p3"
        ws.send(check_client_message({"event_type": "system", "message": "client-id", "id": 7}, "ClientIdRequest"))
        reply = check_frame(recv(ws), "ClientIdReply")
        assert reply["ref_id"] == "7" and reply["body"]["client-id"] == client_id

        ws.send(check_client_message({"event_type": "system", "message": "subscribe", "id": "s1",
                                      "body": {"event_types": ["orchestrator", "nope"]}}, "SubscribeRequest"))
        check_frame(recv(ws), "SubscribeAnswer")

        # Published events: broadcast (seq) and targeted (client_id, no seq); the receipts.
        receipt = api(hub, "POST", "/v1/events", 202, token=publisher_token, body={
            "event_type": "pdfm", "message": "VM_STATE_CHANGED", "body": {"vm_id": "vm-1"}})
        event = check_frame(recv(ws), "Event")
        assert event["id"] == receipt["ids"][0] and event["seq"] == 1
        api(hub, "POST", "/api/v1/events", 202, token=publisher_token, body=[
            {"type": "orchestrator", "message": "HOST_HEALTH_UPDATE", "body": {"host_id": "h-1"}},
            {"event_type": "pdfm", "message": "VM_SNAPSHOT_DONE", "client_id": client_id}])
        events = sorted((check_frame(recv(ws), "Event") for _ in range(2)), key=lambda e: e["event_type"])
        assert "seq" in events[0] and "seq" not in events[1] and events[1]["client_id"] == client_id

        ws.send(check_client_message({"event_type": "system", "message": "unsubscribe", "id": "u1",
                                      "body": {"event_types": "orchestrator, global, nope"}}, "UnsubscribeRequest"))
        check_frame(recv(ws), "UnsubscribeAnswer")

        # sysadm's envelope: answers, errors, a numeric id.
        ws.send(check_client_message({"namespace": "events", "name": "subscribe", "id": "x1",
                                      "args": ["orchestrator"]}, "SysadmSubscribe"))
        check_frame(recv(ws), "SysadmResponse")
        ws.send(check_client_message({"namespace": "events", "name": "unsubscribe", "id": 42,
                                      "args": "orchestrator,global"}, "SysadmUnsubscribe"))
        assert check_frame(recv(ws), "SysadmResponse")["id"] == 42
        ws.send(json.dumps({"namespace": "rpc", "name": "subscribe", "id": "x2", "args": ["pdfm"]}))
        check_frame(recv(ws), "SysadmError")
        ws.send(json.dumps({"namespace": "events", "name": "subscribe", "id": "x3", "args": []}))
        check_frame(recv(ws), "SysadmError")

        # Messages the hub cannot serve: error frames.
        for bad in ["{nope", "[1,2]", '{"message":"ping","id":"x1"}', '{"event_type":"health","id":"x2"}',
                    '{"event_type":"bogus","message":"ping"}', '{"event_type":"global","message":"ping","id":3}',
                    '{"event_type":"health","message":"hello"}',
                    '{"event_type":"system","message":"subscribe","id":"s2"}',
                    '{"event_type":"system","message":"unsubscribe","body":{"event_types":["global"]}}']:
            ws.send(bad)
            frame = check_frame(recv(ws), "ErrorFrame")
            assert frame["client_id"] == client_id, bad
        ws.send(b"\x00\x01")
        check_frame(recv(ws), "ErrorFrame")

        # REST unsubscribe: clean, partial, refusals.
        unsubscribe = lambda body, status, token=reader_token: api(  # noqa: E731
            hub, "POST", "/v1/ws/unsubscribe", status, token=token, body=body)
        clean = unsubscribe({"client_id": client_id, "event_types": ["system"]}, 200)
        assert "guidance" not in clean
        partial = unsubscribe({"client_id": client_id, "event_types": "pdfm, global, bogus"}, 200)
        assert partial["rejected"] == ["global"] and "guidance" in partial
        unsubscribe({"client_id": client_id, "event_types": ["global"]}, 400)
        unsubscribe({"client_id": client_id, "event_types": []}, 400)
        unsubscribe({"client_id": "abc", "event_types": ["pdfm"]}, 400)
        unsubscribe({"client_id": str(uuid.uuid4()), "event_types": ["pdfm"]}, 404)
        unsubscribe({"client_id": client_id, "event_types": ["health"]}, 403,
                    token=hub.mint_token("mallory", "READ_ONLY"))
        api(hub, "POST", "/v1/ws/unsubscribe", 401, body={"client_id": client_id, "event_types": ["health"]})
        # A removed channel: the message gets the not-subscribed error frame.
        ws.send('{"event_type":"system","message":"client-id","id":"r2"}')
        check_frame(recv(ws), "ErrorFrame")

        # A second socket from the same IP: 409 before the upgrade.
        handshake(hub, "/v1/ws/subscribe?event_types=pdfm", 409, reader_token)


def test_rest_responses_match_the_openapi_schemas(hub: Hub, reader_token: str,
                                                  publisher_token: str, admin_token: str):
    api(hub, "GET", "/healthz", 200)
    api(hub, "GET", "/api/readyz", 200)
    # Publish: success and refusals.
    api(hub, "POST", "/v1/events", 202, token=publisher_token,
        body=[{"event_type": "pdfm", "message": f"E{i}", "body": {"i": i}} for i in range(3)])
    api(hub, "POST", "/v1/events", 401, body={"event_type": "pdfm", "message": "X"})
    api(hub, "POST", "/v1/events", 401, token="junk", body={"event_type": "pdfm", "message": "X"})
    api(hub, "POST", "/v1/events", 403, token=reader_token, body={"event_type": "pdfm", "message": "X"})
    for bad in ({"event_type": "nope", "message": "X"}, {"event_type": "health", "message": "X"},
                {"event_type": "pdfm", "message": " "}, {"event_type": "pdfm", "message": "X", "severity": 1},
                {"event_type": "pdfm", "message": "X", "body": [1]}, []):
        api(hub, "POST", "/v1/events", 400, token=publisher_token, body=bad)
    api(hub, "POST", "/v1/events", 415, token=publisher_token, raw=b'{"event_type":"pdfm","message":"X"}',
        headers={"Content-Type": "text/plain"})
    api(hub, "POST", "/v1/events", 413, token=publisher_token,
        body=[{"event_type": "pdfm", "message": "X"}] * 1001)
    # History.
    page = api(hub, "GET", "/v1/events?event_type=pdfm&since=1&limit=1", 200, token=reader_token)
    assert page["more"] is True and len(page["events"]) == 1
    page = api(hub, "GET", "/v1/events?event_type=pdfm&since=0&epoch=1", 200, token=reader_token)
    assert page["recovered"] is False and len(page["events"]) == 3
    api(hub, "GET", "/v1/events?event_type=orchestrator", 200, token=reader_token)
    api(hub, "GET", "/v1/events?event_type=pdfm&limit=0", 400, token=reader_token)
    api(hub, "GET", "/v1/events", 400, token=reader_token)
    api(hub, "GET", "/v1/events?event_type=pdfm", 403, token=hub.mint_token("pub-only", "EVENTS_PUBLISH"))
    # Subscribe refusals before the upgrade.
    api(hub, "GET", "/v1/ws/subscribe", 426, token=reader_token)
    api(hub, "GET", "/v1/ws/subscribe", 401)
    handshake(hub, "/v1/ws/subscribe?event_types=pdfm&since=pdfm:x", 400, reader_token)
    handshake(hub, "/v1/ws/subscribe?epoch=abc", 400, reader_token)
    handshake(hub, "/v1/ws/subscribe", 401)
    handshake(hub, "/v1/ws/subscribe?access_token=junk", 401)
    handshake(hub, "/v1/ws/subscribe", 403, hub.mint_token("pub-only", "EVENTS_PUBLISH"))
    # Admin routes, with a live socket so the client lists are not empty.
    url = f"{hub.ws}/v1/ws/subscribe?event_types=pdfm"
    with connect(url, additional_headers={"Authorization": f"Bearer {reader_token}"}) as ws:
        client_id = check_frame(recv(ws), "Welcome")["body"]["client_id"]
        assert len(api(hub, "GET", "/v1/admin/clients", 200, token=admin_token)["clients"]) == 1
        api(hub, "GET", "/v1/admin/channels", 200, token=admin_token)
        assert len(api(hub, "GET", "/v1/ws/clients", 200, token=admin_token)) == 1
        api(hub, "GET", "/v1/ws/stats", 200, token=admin_token)
        api(hub, "GET", "/v1/admin/clients", 403, token=reader_token)
        api(hub, "GET", "/v1/ws/stats", 401)
        api(hub, "DELETE", "/v1/admin/clients/abc", 400, route="/v1/admin/clients/{id}", token=admin_token)
        api(hub, "DELETE", f"/v1/admin/clients/{uuid.uuid4()}", 404, route="/v1/admin/clients/{id}",
            token=admin_token)
        api(hub, "DELETE", f"/v1/admin/clients/{client_id}", 200, route="/v1/admin/clients/{id}",
            token=admin_token)
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                check_frame(recv(ws), "ServerFrame")
        assert closed.value.rcvd.code == 4001
    # Metrics: text, not JSON.
    code, headers, body = http(hub, "GET", "/metrics")
    assert code == 200 and headers["content-type"].startswith("application/openmetrics-text")
    assert "application/openmetrics-text; version=1.0.0; charset=utf-8" in \
        load("openapi.json")["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert headers["content-type"] == "application/openmetrics-text; version=1.0.0; charset=utf-8"
    # Unknown route and wrong method: ErrorBody too.
    code, _, body = http(hub, "GET", "/v2/nothing")
    assert code == 404
    validator(OPENAPI_URI, "/components/schemas/ErrorBody").validate(json.loads(body))
    code, _, body = http(hub, "DELETE", "/v1/events")
    assert code == 405
    validator(OPENAPI_URI, "/components/schemas/ErrorBody").validate(json.loads(body))


def test_the_shutdown_notice_matches_its_schema(hub: Hub, reader_token: str):
    url = f"{hub.ws}/v1/ws/subscribe?event_types=pdfm"
    with connect(url, additional_headers={"Authorization": f"Bearer {reader_token}"}) as ws:
        check_frame(recv(ws), "Welcome")
        hub.proc.terminate()  # SIGTERM; the fixture's stop() then collects exit code 0
        notice = check_frame(recv(ws), "ShutdownNotice")
        assert notice["message"] == "SERVER_SHUTDOWN"
        with pytest.raises(ConnectionClosed) as closed:
            recv(ws)
        assert closed.value.rcvd.code == 1001


# --------------------------------------------------------------------------- #
# The Postman collection                                                        #
# --------------------------------------------------------------------------- #


def postman_requests(items):
    for item in items:
        if "item" in item:
            yield from postman_requests(item["item"])
        else:
            yield item


def test_the_postman_collection_covers_every_route():
    collection = load("events-hub.postman_collection.json")
    assert collection["info"]["schema"] == \
        "https://schema.getpostman.com/json/collection/v2.1.0/collection.json"
    assert collection["auth"] == {"type": "bearer", "bearer": [
        {"key": "token", "value": "{{token}}", "type": "string"}]}
    assert {"baseUrl", "wsUrl", "token"} <= {v["key"] for v in collection["variable"]}
    seen = set()
    for item in postman_requests(collection["item"]):
        request = item["request"]
        assert request["url"]["raw"].startswith("{{baseUrl}}/"), item["name"]
        assert request["url"]["host"] == ["{{baseUrl}}"], item["name"]
        if "body" in request:
            json.loads(request["body"]["raw"])
        path = "/" + "/".join(request["url"]["path"])
        seen.add((request["method"].lower(), re.sub(r":(\w+)", r"{\1}", path)))
    described = {(method, path) for path, item in load("openapi.json")["paths"].items()
                 for method in item}
    assert described == seen, (described ^ seen)


def test_resume_welcomes_and_replays_match_the_schemas(hub: Hub, reader_token: str,
                                                       publisher_token: str):
    api(hub, "POST", "/v1/events", 202, token=publisher_token,
        body=[{"event_type": "pdfm", "message": f"E{i}"} for i in range(3)])
    headers = {"Authorization": f"Bearer {reader_token}"}
    page = api(hub, "GET", "/v1/events?event_type=pdfm&since=9", 200, token=reader_token)
    assert page["recovered"] is False and "reason" in page
    epoch = page["epoch"]
    cases = [
        (f"since=pdfm:1&epoch={epoch}", True, 2),       # replays seq 2 and 3
        (f"since=pdfm:1&epoch={epoch + 1}", False, 0),  # another epoch: unrecovered
        ("last_event_id=" + "ab" * 32, False, 0),      # unknown id: no `unrecovered`
    ]
    for query, recovered, replayed in cases:
        with connect(f"{hub.ws}/v1/ws/subscribe?event_types=pdfm&{query}",
                     additional_headers=headers) as ws:
            body = check_frame(recv(ws), "Welcome")["body"]
            assert body["recovered"] is recovered, body
            for _ in range(replayed):
                check_frame(recv(ws), "Event")


def test_a_welcome_with_a_reason_but_no_recovered_fails():
    body = {k: v for k, v in GOOD_WELCOME["body"].items()}
    frame_validator("Welcome").validate({**GOOD_WELCOME, "body": {**body, "recovered": False, "reason": "x"}})
    with pytest.raises(ValidationError):
        frame_validator("Welcome").validate({**GOOD_WELCOME, "body": {**body, "reason": "x"}})
