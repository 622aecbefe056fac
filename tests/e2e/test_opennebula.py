"""End-to-end: the hub as an OpenNebula Hook Manager subscriber.

A real ZeroMQ publisher that is not ours (pyzmq, from PyPI) plays OpenNebula's
Hook Manager: it binds a PUB socket on 127.0.0.1 and sends two-frame messages,
a key (`EVENT STATE VM/ACTIVE/RUNNING`, `EVENT STATE HOST/MONITORED/`,
`EVENT API one.vm.allocate 1`) and a base64 HOOK_MESSAGE document shaped like
the ones oned sends (HookStateVM / HookStateHost / HookAPI format_message).
The built binary is started with a `[[sources.opennebula]]` block pointing at
it, and websocat, as a user would run it, receives the mapped events.

ZeroMQ's slow joiner: a SUB's subscription reaches the PUB some time after the
connection, and the PUB drops what it sends before. The tests wait for an
observable condition instead of sleeping: they send a probe the bridge
receives but does not forward (an IMAGE state change) until `/readyz` counts
it as skipped, bounded in time.
"""

from __future__ import annotations

import base64
import json
import re
import time
import urllib.request
from pathlib import Path

import pytest
import zmq

from conftest import (
    Hub,
    assert_envelope,
    assert_welcome,
    free_port,
    poll_until,
    require_tool,
    run_client,
    running_hub,
)

SUBSCRIBE_TIMEOUT = 15.0  # seconds for the bridge to (re)connect and subscribe


# --------------------------------------------------------------------------- #
# OpenNebula-format messages                                                   #
# --------------------------------------------------------------------------- #

# VirtualMachine::VmState / LcmState numbers, as in the <VM> document.
VM_STATES = {"INIT": 0, "PENDING": 1, "HOLD": 2, "ACTIVE": 3, "STOPPED": 4,
             "SUSPENDED": 5, "DONE": 6, "POWEROFF": 8, "UNDEPLOYED": 9}
LCM_STATES = {"LCM_INIT": 0, "PROLOG": 1, "BOOT": 2, "RUNNING": 3, "SHUTDOWN": 12,
              "EPILOG": 11}
HOST_STATES = {"INIT": 0, "MONITORING_MONITORED": 1, "MONITORED": 2, "ERROR": 3,
               "DISABLED": 4, "MONITORING_ERROR": 5, "MONITORING_INIT": 6,
               "MONITORING_DISABLED": 7, "OFFLINE": 8}


def vm_message(vm_id: int, name: str, state: str, lcm: str, host: str | None) -> tuple[str, str]:
    """`EVENT STATE VM/<STATE>/<LCM_STATE>` and its HOOK_MESSAGE (hook_message_state.xsd)."""
    remote = f"<REMOTE_HOST>{host}</REMOTE_HOST>" if host else "<REMOTE_HOST/>"
    history = (
        f"<HISTORY_RECORDS><HISTORY><OID>{vm_id}</OID><SEQ>0</SEQ><HOSTNAME>{host}</HOSTNAME>"
        f"<HID>3</HID><CID>0</CID><DS_ID>0</DS_ID><ACTION>0</ACTION></HISTORY></HISTORY_RECORDS>"
        if host else "<HISTORY_RECORDS/>"
    )
    xml = (
        "<HOOK_MESSAGE><HOOK_TYPE>STATE</HOOK_TYPE><HOOK_OBJECT>VM</HOOK_OBJECT>"
        f"<STATE>{state}</STATE><LCM_STATE>{lcm}</LCM_STATE>"
        f"<RESOURCE_ID>{vm_id}</RESOURCE_ID>{remote}"
        f"<VM><ID>{vm_id}</ID><UID>0</UID><GID>0</GID><UNAME>oneadmin</UNAME>"
        f"<GNAME>oneadmin</GNAME><NAME>{name}</NAME>"
        "<PERMISSIONS><OWNER_U>1</OWNER_U><OWNER_M>1</OWNER_M><OWNER_A>0</OWNER_A>"
        "<GROUP_U>0</GROUP_U><GROUP_M>0</GROUP_M><GROUP_A>0</GROUP_A><OTHER_U>0</OTHER_U>"
        "<OTHER_M>0</OTHER_M><OTHER_A>0</OTHER_A></PERMISSIONS>"
        "<LAST_POLL>0</LAST_POLL>"
        f"<STATE>{VM_STATES[state]}</STATE><LCM_STATE>{LCM_STATES[lcm]}</LCM_STATE>"
        "<PREV_STATE>1</PREV_STATE><PREV_LCM_STATE>0</PREV_LCM_STATE><RESCHED>0</RESCHED>"
        "<STIME>1763827200</STIME><ETIME>0</ETIME><DEPLOY_ID></DEPLOY_ID>"
        "<MONITORING/><SCHED_ACTIONS/>"
        f"<TEMPLATE><AUTOMATIC_REQUIREMENTS><![CDATA[!(PUBLIC_CLOUD = YES)]]>"
        f"</AUTOMATIC_REQUIREMENTS><CPU><![CDATA[1]]></CPU><MEMORY><![CDATA[768]]></MEMORY>"
        f"<VMID><![CDATA[{vm_id}]]></VMID></TEMPLATE>"
        "<USER_TEMPLATE><LOGO><![CDATA[images/logos/ubuntu.png]]></LOGO></USER_TEMPLATE>"
        f"{history}</VM></HOOK_MESSAGE>"
    )
    return f"EVENT STATE VM/{state}/{lcm}", xml


def host_message(host_id: int, name: str, state: str) -> tuple[str, str]:
    """`EVENT STATE HOST/<STATE>/` and its HOOK_MESSAGE."""
    xml = (
        "<HOOK_MESSAGE><HOOK_TYPE>STATE</HOOK_TYPE><HOOK_OBJECT>HOST</HOOK_OBJECT>"
        f"<STATE>{state}</STATE><REMOTE_HOST>{name}</REMOTE_HOST>"
        f"<RESOURCE_ID>{host_id}</RESOURCE_ID>"
        f"<HOST><ID>{host_id}</ID><NAME>{name}</NAME><STATE>{HOST_STATES[state]}</STATE>"
        "<PREV_STATE>0</PREV_STATE><IM_MAD><![CDATA[kvm]]></IM_MAD>"
        "<VM_MAD><![CDATA[kvm]]></VM_MAD><CLUSTER_ID>0</CLUSTER_ID>"
        "<CLUSTER>default</CLUSTER><HOST_SHARE><MEM_USAGE>0</MEM_USAGE>"
        "<CPU_USAGE>0</CPU_USAGE><TOTAL_MEM>8009340</TOTAL_MEM><TOTAL_CPU>400</TOTAL_CPU>"
        "<RUNNING_VMS>1</RUNNING_VMS></HOST_SHARE><VMS><ID>42</ID></VMS>"
        "<TEMPLATE><HOSTNAME><![CDATA[node-1.example]]></HOSTNAME></TEMPLATE>"
        "</HOST></HOOK_MESSAGE>"
    )
    return f"EVENT STATE HOST/{state}/", xml


def api_message(call: str, ins: list[str], outs: list[str], success: bool) -> tuple[str, str]:
    """`EVENT API <call> <0|1>` and its HOOK_MESSAGE (hook_message_api.xsd + api_info.xsd)."""
    params = "".join(
        f"<PARAMETER><POSITION>{i}</POSITION><TYPE>{kind}</TYPE><VALUE>{value}</VALUE></PARAMETER>"
        for kind, values in (("IN", ins), ("OUT", outs))
        for i, value in enumerate(values, start=1)
    )
    xml = (
        f"<HOOK_MESSAGE><HOOK_TYPE>API</HOOK_TYPE><CALL>{call}</CALL>"
        f"<CALL_INFO><RESULT>{int(success)}</RESULT><PARAMETERS>{params}</PARAMETERS>"
        "<EXTRA></EXTRA></CALL_INFO></HOOK_MESSAGE>"
    )
    return f"EVENT API {call} {int(success)}", xml


PROBE = ("EVENT STATE IMAGE/READY/", "<HOOK_MESSAGE><HOOK_TYPE>STATE</HOOK_TYPE>"
         "<HOOK_OBJECT>IMAGE</HOOK_OBJECT><STATE>READY</STATE><RESOURCE_ID>0</RESOURCE_ID>"
         "</HOOK_MESSAGE>")


# --------------------------------------------------------------------------- #
# The publisher and the hub                                                    #
# --------------------------------------------------------------------------- #


class HookManager:
    """A pyzmq PUB socket bound where OpenNebula's Hook Manager would be."""

    def __init__(self, context: zmq.Context, port: int):
        self.socket = context.socket(zmq.PUB)
        self.socket.setsockopt(zmq.LINGER, 0)
        # A restarted publisher rebinds the same port; the old socket is closed by
        # libzmq's I/O thread, so the port can stay busy for a moment.
        deadline = time.monotonic() + 10
        while True:
            try:
                self.socket.bind(f"tcp://127.0.0.1:{port}")
                return
            except zmq.ZMQError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)  # retry interval, not synchronisation

    def send(self, message: tuple[str, str]) -> None:
        key, xml = message
        self.send_frames([key.encode(), base64.b64encode(xml.encode())])

    def send_frames(self, frames: list[bytes]) -> None:
        self.socket.send_multipart(frames)

    def close(self) -> None:
        self.socket.close(linger=0)


def bridge_status(hub: Hub) -> dict:
    with urllib.request.urlopen(f"{hub.http}/readyz", timeout=5) as reply:
        body = json.loads(reply.read())
    return body["sources"]["opennebula"][0]


def wait_subscribed(hub: Hub, publisher: HookManager) -> None:
    """Sends the probe until the bridge has seen one: from then on, nothing is dropped."""
    before = bridge_status(hub)["skipped"]
    deadline = time.monotonic() + SUBSCRIBE_TIMEOUT
    while bridge_status(hub)["skipped"] == before:
        if time.monotonic() > deadline:
            raise AssertionError(f"the bridge did not subscribe within {SUBSCRIBE_TIMEOUT} s:"
                                 f" {bridge_status(hub)}\n{hub.logs()}")
        publisher.send(PROBE)
        time.sleep(0.05)  # poll interval, not synchronisation


@pytest.fixture
def zmq_context():
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


@pytest.fixture
def one_port() -> int:
    return free_port()


@pytest.fixture
def one_hub(tmp_path: Path, one_port: int):
    """The built hub with one [[sources.opennebula]] block on 127.0.0.1:<one_port>."""
    config = tmp_path / "hub.toml"
    config.write_text(
        "[[sources.opennebula]]\n"
        f'endpoint = "tcp://127.0.0.1:{one_port}"\n'
        'channel = "orchestrator"\n'
        "reconnect_min_ms = 50\n"
        "reconnect_max_ms = 500\n"
    )
    with running_hub(tmp_path, {"RUST_LOG": "info"}, ["--config", str(config)]) as hub:
        yield hub


def subscribe(hub: Hub):
    """websocat on the bridge's channel, as in the guides; returns the running client."""
    token = hub.mint_token("sre", "READ_ONLY")
    url = f"{hub.ws}/v1/ws/subscribe?event_types=orchestrator"
    return run_client([require_tool("websocat"), url, "-H", f"Authorization: Bearer {token}"])


def expect_events(client, expected: list[tuple[str, dict]]) -> None:
    """The next frames are exactly these events, in this order."""
    for message, body in expected:
        frame = client.next_frame()
        assert_envelope(frame)
        assert frame["event_type"] == "orchestrator", frame
        assert (frame["message"], frame["body"]) == (message, body), frame


def vm_event(vm_id, name, current, previous, state, lcm, host=None) -> tuple[str, dict]:
    body = {"source": "opennebula", "vm_id": vm_id, "name": name, "current_state": current}
    if previous is not None:
        body["previous_state"] = previous
    body |= {"state": state, "lcm_state": lcm}
    if host:
        body["host"] = host
    return "VM_STATE_CHANGED", body


# --------------------------------------------------------------------------- #


def test_opennebula_events_reach_websocat_in_order_across_a_publisher_restart(
        one_hub, one_port, zmq_context):
    with subscribe(one_hub) as client:
        assert_welcome(client.next_frame(), ["orchestrator", "global"])
        one = HookManager(zmq_context, one_port)
        wait_subscribed(one_hub, one)
        assert bridge_status(one_hub)["connected"] is True

        # A VM's life, a host coming up, and two API calls, as oned would send them.
        one.send(api_message("one.vm.allocate", ["****", "NAME=web-1\nCPU=1\nMEMORY=768", "false"],
                             ["true", "42", "0"], True))
        one.send(vm_message(42, "web-1", "PENDING", "LCM_INIT", None))
        one.send(host_message(3, "node-1", "INIT"))
        one.send(host_message(3, "node-1", "MONITORED"))
        one.send(api_message("one.vm.deploy", ["****", "42", "3", "false", "-1", ""],
                             ["true", "42", "0"], True))
        one.send(vm_message(42, "web-1", "ACTIVE", "PROLOG", "node-1"))
        one.send(vm_message(42, "web-1", "ACTIVE", "BOOT", "node-1"))
        one.send(vm_message(42, "web-1", "ACTIVE", "RUNNING", "node-1"))
        one.send(api_message("one.vm.action", ["****", "resume", "42"],
                             ["false", "[one.vm.action] Wrong state to perform action", "2048",
                              "42"], False))

        expect_events(client, [
            ("API_CALL", {"source": "opennebula", "call": "one.vm.allocate", "success": True,
                          "resource_id": 42}),
            vm_event(42, "web-1", "pending", None, "PENDING", "LCM_INIT"),
            ("HOST_STATE_CHANGED", {"source": "opennebula", "host_id": 3, "name": "node-1",
                                    "state": "INIT", "health": "initializing"}),
            ("HOST_HEALTH_UPDATE", {"source": "opennebula", "host_id": 3, "name": "node-1",
                                    "state": "initializing"}),
            ("HOST_STATE_CHANGED", {"source": "opennebula", "host_id": 3, "name": "node-1",
                                    "state": "MONITORED", "previous_state": "INIT",
                                    "health": "healthy"}),
            ("HOST_HEALTH_UPDATE", {"source": "opennebula", "host_id": 3, "name": "node-1",
                                    "state": "healthy", "previous_state": "initializing"}),
            ("API_CALL", {"source": "opennebula", "call": "one.vm.deploy", "success": True,
                          "resource_id": 42}),
            vm_event(42, "web-1", "prolog", "pending", "ACTIVE", "PROLOG", "node-1"),
            vm_event(42, "web-1", "boot", "prolog", "ACTIVE", "BOOT", "node-1"),
            vm_event(42, "web-1", "running", "boot", "ACTIVE", "RUNNING", "node-1"),
            ("API_CALL", {"source": "opennebula", "call": "one.vm.action", "success": False,
                          "resource_id": 42,
                          "error": "[one.vm.action] Wrong state to perform action"}),
        ])

        # OpenNebula restarts: the publisher goes away and comes back on the same port.
        one.close()
        poll_until(lambda: bridge_status(one_hub)["connected"] is False, 10,
                   "the bridge to notice the publisher is gone")
        one = HookManager(zmq_context, one_port)
        wait_subscribed(one_hub, one)

        one.send(vm_message(42, "web-1", "POWEROFF", "LCM_INIT", "node-1"))
        one.send(host_message(3, "node-1", "ERROR"))
        one.send(vm_message(42, "web-1", "DONE", "LCM_INIT", "node-1"))
        expect_events(client, [
            # The bridge kept its memory across the reconnection.
            vm_event(42, "web-1", "poweroff", "running", "POWEROFF", "LCM_INIT", "node-1"),
            ("HOST_STATE_CHANGED", {"source": "opennebula", "host_id": 3, "name": "node-1",
                                    "state": "ERROR", "previous_state": "MONITORED",
                                    "health": "unhealthy"}),
            ("HOST_HEALTH_UPDATE", {"source": "opennebula", "host_id": 3, "name": "node-1",
                                    "state": "unhealthy", "previous_state": "healthy"}),
            vm_event(42, "web-1", "done", "poweroff", "DONE", "LCM_INIT", "node-1"),
        ])
        one.close()

    # The bridge counts an event once Hub::publish returns, which can be just after websocat
    # printed it.
    poll_until(lambda: bridge_status(one_hub)["published"] == 15, 10, "15 events counted")
    status = bridge_status(one_hub)
    assert status["connections"] >= 2, status
    assert status["tracked"] == {"vms": 0, "hosts": 1}, status  # VM 42 forgotten at DONE
    assert sum(status["malformed"].values()) == 0, status


def test_malformed_messages_are_skipped_counted_and_logged_once_per_kind(
        one_hub, one_port, zmq_context):
    with subscribe(one_hub) as client:
        assert_welcome(client.next_frame(), ["orchestrator", "global"])
        one = HookManager(zmq_context, one_port)
        wait_subscribed(one_hub, one)

        key, _ = vm_message(7, "db", "ACTIVE", "RUNNING", "node-1")
        one.send_frames([key.encode(), b"this is not base64!"])
        one.send_frames([key.encode(), b"%%%%"])
        one.send_frames([key.encode(), base64.b64encode(b"<HOOK_MESSAGE><VM>")])
        one.send(("EVENT BOGUS thing", PROBE[1]))
        one.send_frames([key.encode()])
        one.send(("EVENT STATE HOST/ERROR/", vm_message(7, "db", "ACTIVE", "RUNNING", None)[1]))
        one.send(vm_message(7, "db", "ACTIVE", "RUNNING", "node-1"))

        # Everything malformed was skipped: the next frame is the good event.
        expect_events(client, [vm_event(7, "db", "running", None, "ACTIVE", "RUNNING", "node-1")])
        one.close()

    poll_until(lambda: bridge_status(one_hub)["published"] == 1, 10, "the event counted")
    status = bridge_status(one_hub)
    assert status["malformed"] == {"frames": 1, "unknown_key": 1, "base64": 2, "xml": 1,
                                   "schema": 1}, status
    assert status["received"] == status["skipped"] + 7, status

    # One warning per kind, never one per message.
    assert one_hub.stop() == 0
    log = (one_hub.log_dir / "hub.stderr.log").read_text()
    warnings = [line for line in log.splitlines()
                if " WARN " in line and "skipped a malformed OpenNebula message" in line]
    kinds = sorted(re.search(r'kind="?(\w+)', line).group(1) for line in warnings)
    assert kinds == ["base64", "frames", "schema", "unknown_key", "xml"], warnings
