"""End-to-end: the hub serving TLS itself, driven by websocat (`wss://`, `-k` for the
self-signed certificate) and curl, as an operator would try it.

Run:  scripts/install-test-deps.sh && cargo build --release && pytest -q tests/e2e/test_tls.py
"""

from __future__ import annotations

import subprocess

from conftest import assert_welcome, curl, require_tool, run_client, running_hub, self_signed

EVENT = {"event_type": "pdfm", "message": "VM_STATE_CHANGED", "body": {"vm_id": "vm-1"}}


def test_websocat_over_wss_with_the_authorization_query_parameter(tmp_path):
    cert, key = self_signed(tmp_path)
    env = {"EVENTS_HUB__SERVER__TLS__CERT": str(cert), "EVENTS_HUB__SERVER__TLS__KEY": str(key)}
    with running_hub(tmp_path, extra_env=env, ca_file=cert) as hub:
        banner = (tmp_path / "hub.stdout.log").read_text()
        assert f"listening on https://127.0.0.1:{hub.port}" in banner, banner
        reader = hub.mint_token("alice", "READ_ONLY")
        publisher = hub.mint_token("publisher", "READ_ONLY,EVENTS_PUBLISH")
        url = f"{hub.ws}/v1/ws/subscribe?event_types=pdfm&authorization=Bearer%20{reader}"
        with run_client([require_tool("websocat"), "-k", url]) as client:
            assert_welcome(client.next_frame(), ["pdfm", "global"])
            reply = hub.publish(publisher, EVENT)
            assert reply.status == 202, reply.raw
            assert client.next_frame()["message"] == "VM_STATE_CHANGED"

        # Plain HTTP to the TLS port fails at the client; the hub keeps serving.
        plain = subprocess.run(
            [require_tool("curl"), "-sS", "--max-time", "5", f"http://127.0.0.1:{hub.port}/healthz"],
            capture_output=True, text=True, timeout=15,
        )
        assert plain.returncode != 0, plain.stdout
        assert curl("--cacert", str(cert), f"{hub.http}/healthz").status == 200
    logs = (tmp_path / "hub.stderr.log").read_text()
    assert "subscriber connected" in logs, logs
    assert reader not in logs and reader.rsplit(".", 1)[1] not in logs
