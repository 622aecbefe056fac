"""End-to-end: the hub as a subscriber of OpenNebula's Hook Manager.

A ZeroMQ publisher that is not ours (pyzmq, from PyPI) plays OpenNebula's Hook Manager driver:
it binds a PUB socket on 127.0.0.1 and sends two-frame messages, a key and a base64
`HOOK_MESSAGE` document, built the way OpenNebula builds them (OpenNebula/one):

- `src/hm_mad/one_hm.rb`, `action_execute` + `key`: every STATE document goes out several
  times with the same content, under `"EVENT #{obj} #{resource_id}/#{state}/#{lcm_state} "`,
  then `"EVENT STATE #{obj}/#{state}/#{lcm_state}/#{resource_id} "`, then, when the document
  has a `SERVICE_ID`, `"EVENT SERVICE #{service_id} "` (trailing spaces included; the LCM
  state is empty for objects other than VMs). An API document goes out once, under
  `"EVENT API #{call} #{RESULT}"`. `action_retry`: key `RETRY`, content
  `"#{command} #{params}"` (`params` is nil: a trailing space).
- The documents: `src/hm/HookStateVM.cc`, `HookStateHost.cc`, `HookStateImage.cc`,
  `HookStateVirtualNetwork.cc` and `HookAPI.cc` (`format_message`), with the objects'
  `to_xml` of `src/vm/VirtualMachine.cc` (`to_xml_extended`), `src/vm/History.cc`,
  `src/host/Host.cc`, `src/image/Image.cc`, `src/vnm/VirtualNetwork.cc` (abridged: fewer
  attributes, same element order); template attributes are CDATA, in name order (a multimap).
- API parameters: `include/RequestAttributes.h` (`param_value`: parameter 0, the session, is
  `****`), `src/rm/xml-rpc/RequestAttributesXRPC.h` (`api_value`: booleans as `0`/`1`), both
  written unescaped; the OUT values of `Request::make_xml_response` (`include/Request.h`):
  OUT 1 `true`/`false`, OUT 2 the value or the error text of `Request::failure_message`
  (`src/rm/Request.cc`), OUT 3 the error code, OUT 4 (failures only) `resp_id`. A successful
  `allocate` puts the new object's XML in `EXTRA` (`SharedAPI::allocate`, `src/rm/api/`).
- `RETRY`: `HookLog::retry` (`src/hm/HookLog.cc`) and `HookManager::format_message`
  (`src/hm/HookManager.cc`). The Hook Execution Manager subscribes to `RETRY` besides its
  `EVENT` filters (`src/hem/onehem-server.rb`); the hub's default `["EVENT "]` does not.
- Base64: `ssl_util::base64_encode` (one line, padded), which is Python's `base64.b64encode`.

The built binary runs with a `[[sources.opennebula]]` block pointing at the publisher, and
websocat, as a user would run it, receives the mapped events.

ZeroMQ's slow joiner: a SUB's subscription reaches the PUB some time after the connection, and
the PUB drops what it sends before. Nothing here sleeps to wait for it: `wait_subscribed` sends
image state changes (which the bridge receives but does not forward), each of a new image,
until `/readyz` counts one, then one_hm.rb's second key of the last one, a copy: once that copy
is counted, every probe that reached the bridge has been counted (one connection keeps the
order), so the counters are exact from there on. A block that does not subscribe to images is
probed with its first real state change, sent again until it is published (the repeats are
copies).
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import time
import urllib.request
import xml.etree.ElementTree as ElementTree
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

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
COUNT_TIMEOUT = 10.0  # seconds for the bridge to count what it was sent

# /readyz's counters (src/sources/opennebula/stats.rs, mapping.rs, message.rs).
SKIPPED_KINDS = ["copies", "not_forwarded", "retry", "image", "net", "other_objects"]
MALFORMED_KINDS = ["frames", "unknown_key", "base64", "xml", "schema"]

Message = tuple[str, str]  # (key frame, content frame), as one_hm.rb sends them


# --------------------------------------------------------------------------- #
# What oned and one_hm.rb send                                                 #
# --------------------------------------------------------------------------- #


def b64(document: str) -> str:
    """`ssl_util::base64_encode`: standard alphabet, padded, on one line."""
    return base64.b64encode(document.encode()).decode("ascii")


def state_keys(obj: str, resource_id: int, state: str, lcm_state: str = "",
               service_id: int | None = None) -> list[str]:
    """one_hm.rb `key` for a STATE document, each prefixed by `action_execute`'s "EVENT "."""
    keys = [f"EVENT {obj} {resource_id}/{state}/{lcm_state} ",
            f"EVENT STATE {obj}/{state}/{lcm_state}/{resource_id} "]
    if service_id is not None:
        keys.append(f"EVENT SERVICE {service_id} ")
    return keys


def state_messages(keys: list[str], document: str) -> list[Message]:
    """`action_execute`: the same content (oned's base64, passed through) under every key."""
    content = b64(document)
    return [(key, content) for key in keys]


def api_messages(document: str) -> list[Message]:
    """`action_execute` for an API document: one key, `"API #{call} #{RESULT}"`. one_hm.rb
    reads CALL and RESULT with Nokogiri, which recovers from the ill-formed documents oned
    writes; both come before the parameters, so they are read here by position too."""
    call = re.search(r"<CALL>(.*?)</CALL>", document).group(1)
    result = re.search(r"<CALL_INFO><RESULT>(.*?)</RESULT>", document).group(1)
    return [(f"EVENT API {call} {result}", b64(document))]


def well_formed(document: str) -> bool:
    try:
        ElementTree.fromstring(document)
    except ElementTree.ParseError:
        return False
    return True


def template_xml(root: str, attributes: dict[str, str]) -> str:
    """`Template::to_xml`: attributes in name order, values as CDATA (vector attributes are
    passed already rendered, as `<NIC>...</NIC>`)."""
    body = "".join(value if value.startswith(f"<{name}>") else
                   f"<{name}><![CDATA[{value}]]></{name}>"
                   for name, value in sorted(attributes.items()))
    return f"<{root}>{body}</{root}>"


def permissions_xml(owner: str = "110", group: str = "000", other: str = "000") -> str:
    """`PoolObjectSQL::perms_to_xml` (use/manage/admin bits of owner, group, other)."""
    bits = zip(("OWNER", "GROUP", "OTHER"), (owner, group, other))
    return "<PERMISSIONS>" + "".join(
        f"<{who}_{right}>{bit}</{who}_{right}>"
        for who, rights in bits for right, bit in zip("UMA", rights)) + "</PERMISSIONS>"


# VirtualMachine::VmState / LcmState and Host::HostState numbers (include/VirtualMachine.h,
# include/Host.h), as in the objects' own documents.
VM_STATES = {"INIT": 0, "PENDING": 1, "HOLD": 2, "ACTIVE": 3, "STOPPED": 4, "SUSPENDED": 5,
             "DONE": 6, "POWEROFF": 8, "UNDEPLOYED": 9}
LCM_STATES = {"LCM_INIT": 0, "PROLOG": 1, "BOOT": 2, "RUNNING": 3, "EPILOG": 11,
              "SHUTDOWN": 12, "SHUTDOWN_POWEROFF": 18, "BOOT_POWEROFF": 20}
HOST_STATES = {"INIT": 0, "MONITORED": 2, "ERROR": 3, "DISABLED": 4, "OFFLINE": 8}

STIME = 1763827200  # when the objects were created


@dataclass
class Vm:
    """A VM as oned holds it. `change` moves it to a new state and returns the messages
    one_hm.rb publishes for that change."""

    id: int
    name: str
    uname: str = "oneadmin"
    service_id: int | None = None
    state: str = "INIT"
    lcm_state: str = "LCM_INIT"
    host: tuple[str, int] | None = None  # (name, id) once it has a history record

    def change(self, state: str, lcm_state: str, deploy_on: tuple[str, int] | None = None
               ) -> list[Message]:
        previous = (self.state, self.lcm_state)
        self.state, self.lcm_state = state, lcm_state
        if deploy_on is not None:
            self.host = deploy_on
        keys = state_keys("VM", self.id, state, lcm_state, self.service_id)
        return state_messages(keys, self.document(previous))

    def document(self, previous: tuple[str, str]) -> str:
        """`HookStateVM::format_message`: the header, then `to_xml_extended`."""
        service = (f"<SERVICE_ID>{self.service_id}</SERVICE_ID>" if self.service_id is not None
                   else "")
        remote = f"<REMOTE_HOST>{self.host[0]}</REMOTE_HOST>" if self.host else "<REMOTE_HOST/>"
        done = self.state == "DONE"
        booted = self.host is not None and self.lcm_state not in ("PROLOG", "BOOT")
        user_template = {"LOGO": "images/logos/ubuntu.png"}
        if self.service_id is not None:
            user_template["SERVICE_ID"] = str(self.service_id)
        if self.host:
            hostname, hid = self.host
            history = (
                f"<HISTORY_RECORDS><HISTORY><OID>{self.id}</OID><SEQ>0</SEQ>"
                f"<HOSTNAME>{hostname}</HOSTNAME><HID>{hid}</HID><CID>0</CID>"
                f"<STIME>{STIME + 60}</STIME><ETIME>{STIME + 3600 if done else 0}</ETIME>"
                "<VM_MAD>kvm</VM_MAD><TM_MAD>ssh</TM_MAD><DS_ID>0</DS_ID><PLAN_ID>-1</PLAN_ID>"
                f"<ACTION_ID>-1</ACTION_ID><PSTIME>{STIME + 60}</PSTIME>"
                f"<PETIME>{STIME + 90}</PETIME><RSTIME>{STIME + 90}</RSTIME><RETIME>0</RETIME>"
                "<ESTIME>0</ESTIME><EETIME>0</EETIME><ACTION>0</ACTION><UID>-1</UID>"
                "<GID>-1</GID><REQUEST_ID>-1</REQUEST_ID></HISTORY></HISTORY_RECORDS>"
            )
        else:
            history = "<HISTORY_RECORDS/>"
        nic = ("<NIC><IP><![CDATA[10.0.0.42]]></IP><NAME><![CDATA[NIC0]]></NAME>"
               "<NETWORK><![CDATA[private]]></NETWORK><NIC_ID><![CDATA[0]]></NIC_ID></NIC>")
        return (
            "<HOOK_MESSAGE><HOOK_TYPE>STATE</HOOK_TYPE><HOOK_OBJECT>VM</HOOK_OBJECT>"
            f"<STATE>{self.state}</STATE><LCM_STATE>{self.lcm_state}</LCM_STATE>"
            f"<RESOURCE_ID>{self.id}</RESOURCE_ID>{service}{remote}"
            f"<VM><ID>{self.id}</ID><UID>0</UID><GID>0</GID><UNAME>{self.uname}</UNAME>"
            f"<GNAME>oneadmin</GNAME><NAME>{self.name}</NAME>{permissions_xml()}"
            f"<LAST_POLL>0</LAST_POLL><STATE>{VM_STATES[self.state]}</STATE>"
            f"<LCM_STATE>{LCM_STATES[self.lcm_state]}</LCM_STATE>"
            f"<PREV_STATE>{VM_STATES[previous[0]]}</PREV_STATE>"
            f"<PREV_LCM_STATE>{LCM_STATES[previous[1]]}</PREV_LCM_STATE><RESCHED>0</RESCHED>"
            f"<STIME>{STIME}</STIME><ETIME>{STIME + 3600 if done else 0}</ETIME>"
            f"<DEPLOY_ID>{f'one-{self.id}' if booted else ''}</DEPLOY_ID>"
            "<MONITORING></MONITORING><SCHED_ACTIONS></SCHED_ACTIONS>"
            + template_xml("TEMPLATE", {"AUTOMATIC_REQUIREMENTS": "!(PUBLIC_CLOUD = YES)",
                                        "CPU": "1", "MEMORY": "768", "NIC": nic,
                                        "VMID": str(self.id)})
            + template_xml("USER_TEMPLATE", user_template)
            + f"{history}</VM></HOOK_MESSAGE>"
        )


@dataclass
class Host:
    """A host as oned holds it; `change` returns what one_hm.rb publishes."""

    id: int
    name: str
    state: str = "INIT"

    def change(self, state: str) -> list[Message]:
        previous, self.state = self.state, state
        # Host::to_xml; a host in ERROR has the monitoring error in its template.
        attributes = {"ARCH": "x86_64", "HOSTNAME": f"{self.name}.example", "HYPERVISOR": "kvm"}
        if state == "ERROR":
            attributes["ERROR"] = f"Error monitoring Host {self.name} ({self.id}): timeout"
        document = (
            "<HOOK_MESSAGE><HOOK_TYPE>STATE</HOOK_TYPE><HOOK_OBJECT>HOST</HOOK_OBJECT>"
            f"<STATE>{state}</STATE><REMOTE_HOST>{self.name}</REMOTE_HOST>"
            f"<RESOURCE_ID>{self.id}</RESOURCE_ID>"
            f"<HOST><ID>{self.id}</ID><NAME>{self.name}</NAME><STATE>{HOST_STATES[state]}</STATE>"
            f"<PREV_STATE>{HOST_STATES[previous]}</PREV_STATE><IM_MAD>kvm</IM_MAD>"
            "<VM_MAD>kvm</VM_MAD><CLUSTER_ID>0</CLUSTER_ID><CLUSTER>default</CLUSTER>"
            "<HOST_SHARE><MEM_USAGE>786432</MEM_USAGE><CPU_USAGE>100</CPU_USAGE>"
            "<TOTAL_MEM>8009340</TOTAL_MEM><TOTAL_CPU>400</TOTAL_CPU>"
            "<RUNNING_VMS>1</RUNNING_VMS></HOST_SHARE><VMS><ID>42</ID></VMS>"
            + template_xml("TEMPLATE", attributes)
            + "<MONITORING></MONITORING></HOST></HOOK_MESSAGE>"
        )
        return state_messages(state_keys("HOST", self.id, state), document)


# Image::ImageState and VirtualNetwork::VirtualNetworkState (include/Image.h,
# include/VirtualNetwork.h).
IMAGE_STATES = {"READY": 1, "USED": 2, "LOCKED": 4}
VNET_STATES = {"INIT": 0, "READY": 1, "LOCK_CREATE": 2}


def image_messages(image_id: int, name: str, state: str, previous: str = "LOCKED"
                   ) -> list[Message]:
    """`HookStateImage::format_message` (no REMOTE_HOST) with `Image::to_xml`."""
    document = (
        "<HOOK_MESSAGE><HOOK_TYPE>STATE</HOOK_TYPE><HOOK_OBJECT>IMAGE</HOOK_OBJECT>"
        f"<STATE>{state}</STATE><RESOURCE_ID>{image_id}</RESOURCE_ID>"
        f"<IMAGE><ID>{image_id}</ID><UID>0</UID><GID>0</GID><UNAME>oneadmin</UNAME>"
        f"<GNAME>oneadmin</GNAME><NAME>{name}</NAME>{permissions_xml()}<TYPE>0</TYPE>"
        f"<DISK_TYPE>0</DISK_TYPE><PERSISTENT>0</PERSISTENT><REGTIME>{STIME}</REGTIME>"
        f"<MODTIME>{STIME}</MODTIME>"
        f"<SOURCE>/var/lib/one//datastores/1/{image_id:032x}</SOURCE>"
        f"<PATH>https://images.example/{name}.qcow2</PATH><FORMAT>qcow2</FORMAT><FS></FS>"
        f"<SIZE>2252</SIZE><STATE>{IMAGE_STATES[state]}</STATE>"
        f"<PREV_STATE>{IMAGE_STATES[previous]}</PREV_STATE><RUNNING_VMS>0</RUNNING_VMS>"
        "<CLONING_OPS>0</CLONING_OPS><CLONING_ID>-1</CLONING_ID>"
        "<TARGET_SNAPSHOT>-1</TARGET_SNAPSHOT><DATASTORE_ID>1</DATASTORE_ID>"
        "<DATASTORE>default</DATASTORE><VMS></VMS><CLONES></CLONES><APP_CLONES></APP_CLONES>"
        + template_xml("TEMPLATE", {"DEV_PREFIX": "vd"})
        + "<SNAPSHOTS><ALLOW_ORPHANS><![CDATA[YES]]></ALLOW_ORPHANS><CURRENT_BASE><![CDATA[-1]]>"
        "</CURRENT_BASE><NEXT_SNAPSHOT><![CDATA[0]]></NEXT_SNAPSHOT></SNAPSHOTS>"
        "<BACKUP_INCREMENTS></BACKUP_INCREMENTS><BACKUP_DISK_IDS></BACKUP_DISK_IDS>"
        "</IMAGE></HOOK_MESSAGE>"
    )
    return state_messages(state_keys("IMAGE", image_id, state), document)


def vnet_messages(vnet_id: int, name: str, state: str, previous: str = "LOCK_CREATE"
                  ) -> list[Message]:
    """`HookStateVirtualNetwork::format_message`: `HOOK_OBJECT` NET, the network in `<VNET>`
    (`VirtualNetwork::to_xml`)."""
    document = (
        "<HOOK_MESSAGE><HOOK_TYPE>STATE</HOOK_TYPE><HOOK_OBJECT>NET</HOOK_OBJECT>"
        f"<STATE>{state}</STATE><RESOURCE_ID>{vnet_id}</RESOURCE_ID>"
        f"<VNET><ID>{vnet_id}</ID><UID>0</UID><GID>0</GID><UNAME>oneadmin</UNAME>"
        f"<GNAME>oneadmin</GNAME><NAME>{name}</NAME>{permissions_xml()}"
        "<CLUSTERS><ID>0</ID></CLUSTERS><BRIDGE>onebr0</BRIDGE><BRIDGE_TYPE>linux</BRIDGE_TYPE>"
        f"<STATE>{VNET_STATES[state]}</STATE><PREV_STATE>{VNET_STATES[previous]}</PREV_STATE>"
        "<PARENT_NETWORK_ID/><TEMPLATE_ID/><VN_MAD>bridge</VN_MAD><PHYDEV></PHYDEV>"
        "<VLAN_ID></VLAN_ID><OUTER_VLAN_ID></OUTER_VLAN_ID><VLAN_ID_AUTOMATIC>0</VLAN_ID_AUTOMATIC>"
        "<OUTER_VLAN_ID_AUTOMATIC>0</OUTER_VLAN_ID_AUTOMATIC><USED_LEASES>1</USED_LEASES>"
        "<VROUTERS></VROUTERS><UPDATED_VMS></UPDATED_VMS><OUTDATED_VMS></OUTDATED_VMS>"
        "<UPDATING_VMS></UPDATING_VMS><ERROR_VMS></ERROR_VMS>"
        + template_xml("TEMPLATE", {"DNS": "10.0.0.1", "NETWORK_ADDRESS": "10.0.0.0"})
        + "<AR_POOL><AR><AR_ID><![CDATA[0]]></AR_ID><IP><![CDATA[10.0.0.10]]></IP>"
        "<SIZE><![CDATA[100]]></SIZE><TYPE><![CDATA[IP4]]></TYPE></AR></AR_POOL>"
        "</VNET></HOOK_MESSAGE>"
    )
    return state_messages(state_keys("NET", vnet_id, state), document)


# Request::ErrorCode (include/Request.h).
SUCCESS, ACTION, ALLOCATE = 0x00000, 0x00800, 0x04000


def api_document(call: str, ins: list[str], error_code: int, out2: str, resp_id: int = -1,
                 extra: str = "") -> str:
    """`HookAPI::format_message`: the IN parameters as given (unescaped), then the OUT values
    of `Request::make_xml_response`, then `EXTRA`."""
    success = error_code == SUCCESS

    def parameter(position: int, kind: str, value) -> str:
        return (f"<PARAMETER><POSITION>{position}</POSITION><TYPE>{kind}</TYPE>"
                f"<VALUE>{value}</VALUE></PARAMETER>")

    params = "".join(parameter(i, "IN", value) for i, value in enumerate(ins, start=1))
    params += parameter(1, "OUT", "true" if success else "false")
    params += parameter(2, "OUT", out2)
    params += parameter(3, "OUT", error_code)
    if not success:
        params += parameter(4, "OUT", resp_id)
    return (f"<HOOK_MESSAGE><HOOK_TYPE>API</HOOK_TYPE><CALL>{call}</CALL><CALL_INFO>"
            f"<RESULT>{int(success)}</RESULT><PARAMETERS>{params}</PARAMETERS>"
            f"<EXTRA>{extra}</EXTRA></CALL_INFO></HOOK_MESSAGE>")


def retry_messages(hook_id: int, arguments: str, remote_host: str = "") -> list[Message]:
    """`onehook log --retry`: `HookLog::retry` base64-encodes the execution record's ARGUMENTS
    into `HookManager::format_message`, and one_hm.rb `action_retry` publishes
    `"#{command} #{params}"`: that document and an empty `params`."""
    host = f"<REMOTE_HOST>{remote_host}</REMOTE_HOST>" if remote_host else ""
    document = (f"<HOOK_MESSAGE><ARGUMENTS>{b64(arguments)}</ARGUMENTS>"
                f"<HOOK_ID>{hook_id}</HOOK_ID>{host}</HOOK_MESSAGE>")
    return [("RETRY", f"{b64(document)} ")]


# --------------------------------------------------------------------------- #
# The publisher, the hub, the client                                           #
# --------------------------------------------------------------------------- #


class HookManager:
    """A pyzmq PUB socket bound where OpenNebula's Hook Manager driver binds its own."""

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

    def send(self, messages: list[Message]) -> None:
        """`publish_message` for each: the key with SNDMORE, then the content."""
        for key, content in messages:
            self.send_frames([key.encode(), content.encode()])

    def send_frames(self, frames: list[bytes]) -> None:
        self.socket.send_multipart(frames)

    def close(self) -> None:
        self.socket.close(linger=0)


def bridge_status(hub: Hub) -> dict:
    with urllib.request.urlopen(f"{hub.http}/readyz", timeout=5) as reply:
        body = json.loads(reply.read())
    return body["sources"]["opennebula"][0]


_probe_ids = itertools.count(1000)  # image ids of the probes, a new one per probe


def wait_subscribed(hub: Hub, publisher: HookManager) -> int:
    """Sends probes until the bridge has seen one: from then on, nothing is dropped. Returns
    how many probes the bridge counted (`skipped_by.image`), every one of them counted.

    Each probe is the first message of a new image's state change (`EVENT IMAGE <id>/READY/ `).
    Once one is counted, the second message of the last probe's change, one_hm.rb's
    `EVENT STATE IMAGE/READY//<id> ` with the same content, is sent: a copy, counted after
    every probe before it."""
    before = bridge_status(hub)
    deadline = time.monotonic() + SUBSCRIBE_TIMEOUT
    sent: list[list[Message]] = []
    while bridge_status(hub)["skipped"] == before["skipped"]:
        if time.monotonic() > deadline:
            raise AssertionError(f"the bridge did not subscribe within {SUBSCRIBE_TIMEOUT} s:"
                                 f" {bridge_status(hub)}\n{hub.logs()}")
        probe = image_messages(next(_probe_ids), "probe", "READY")
        publisher.send(probe[:1])
        sent.append(probe)
        time.sleep(0.05)  # poll interval, not synchronisation
    publisher.send(sent[-1][1:])
    copies = before["skipped_by"]["copies"] + 1
    poll_until(lambda: bridge_status(hub)["skipped_by"]["copies"] == copies, COUNT_TIMEOUT,
               "the last probe's copy to be counted")
    after = bridge_status(hub)
    probes = after["skipped_by"]["image"] - before["skipped_by"]["image"]
    assert 1 <= probes <= len(sent), (probes, len(sent), after)
    assert after["received"] - before["received"] == probes + 1, (before, after)
    assert after["skipped"] - before["skipped"] == probes + 1, (before, after)
    for unchanged in ("published", "malformed"):
        assert after[unchanged] == before[unchanged], (before, after)
    return probes


def probe_with(hub: Hub, publisher: HookManager, change: list[Message]) -> int:
    """Sends all of one state change's messages until the bridge has published it (for a block
    that does not receive images); returns how many times the change was sent. The repeats
    that reached the bridge are copies, counted by `Ledger.repeated`."""
    before = bridge_status(hub)
    deadline = time.monotonic() + SUBSCRIBE_TIMEOUT
    sends = 0
    while bridge_status(hub)["published"] == before["published"]:
        if time.monotonic() > deadline:
            raise AssertionError(f"the bridge did not subscribe within {SUBSCRIBE_TIMEOUT} s:"
                                 f" {bridge_status(hub)}\n{hub.logs()}")
        publisher.send(change)
        sends += 1
        time.sleep(0.05)  # poll interval, not synchronisation
    return sends


@dataclass
class Ledger:
    """What the bridge's /readyz counters must say, worked out message by message: a message
    whose key no `subscribe` prefix matches never reaches the bridge; of one state change's
    messages, the first to arrive is mapped (or skipped as `skip`), the others are copies."""

    subscribe: list[str]
    received: int = 0
    published: int = 0
    skipped_by: dict = field(default_factory=lambda: dict.fromkeys(SKIPPED_KINDS, 0))
    malformed: dict = field(default_factory=lambda: dict.fromkeys(MALFORMED_KINDS, 0))

    def sent(self, messages: list[Message], events: int = 0, skip: str | None = None) -> None:
        delivered = [key for key, _ in messages if key.startswith(tuple(self.subscribe))]
        if not delivered:
            return
        self.received += len(delivered)
        self.published += events
        if skip is not None:
            self.skipped_by[skip] += 1
        self.skipped_by["copies"] += len(delivered) - 1

    def probes(self, counted: int) -> None:
        """`wait_subscribed`'s probes: `counted` images and the last one's copy."""
        self.received += counted + 1
        self.skipped_by["image"] += counted
        self.skipped_by["copies"] += 1

    def bad(self, kind: str, copies: int = 0) -> None:
        """A malformed message (and `copies` copies of its content after it)."""
        self.received += 1 + copies
        self.malformed[kind] += 1
        self.skipped_by["copies"] += copies

    def repeated(self, hub: Hub, change: list[Message], sends: int) -> int:
        """`probe_with`'s change: published once, its repeats copies. How many repeats reached
        the bridge is read from `received`, final once the last message sent has given its
        event on the client (one connection keeps the order); `settled` then checks that each
        of them was counted as a copy."""
        self.sent(change, events=1)
        repeats = bridge_status(hub)["received"] - self.received
        assert 0 <= repeats < sends, (repeats, sends, self)
        self.received += repeats
        self.skipped_by["copies"] += repeats
        return repeats

    def settled(self, hub: Hub) -> dict:
        """Waits until the bridge has received everything, then checks every counter."""
        poll_until(lambda: bridge_status(hub)["received"] >= self.received, COUNT_TIMEOUT,
                   f"{self.received} messages received")
        # An event is counted once Publisher::publish returns, which can be just after websocat
        # printed it.
        poll_until(lambda: bridge_status(hub)["published"] >= self.published, COUNT_TIMEOUT,
                   f"{self.published} events counted")
        status = bridge_status(hub)
        assert status["received"] == self.received, (self, status)
        assert status["published"] == self.published, (self, status)
        assert status["skipped_by"] == self.skipped_by, (self, status)
        assert status["skipped"] == sum(self.skipped_by.values()), (self, status)
        assert status["malformed"] == self.malformed, (self, status)
        return status


@pytest.fixture
def zmq_context():
    context = zmq.Context()
    yield context
    context.destroy(linger=0)


@pytest.fixture
def one_port() -> int:
    return free_port()


@contextmanager
def bridge_hub(tmp_path: Path, port: int, subscribe: list[str] | None = None) -> Iterator[Hub]:
    """The built hub with one [[sources.opennebula]] block on 127.0.0.1:<port>."""
    config = tmp_path / "hub.toml"
    config.write_text(
        "[[sources.opennebula]]\n"
        f'endpoint = "tcp://127.0.0.1:{port}"\n'
        'channel = "orchestrator"\n'
        + (f"subscribe = {json.dumps(subscribe)}\n" if subscribe is not None else "")
        + "reconnect_min_ms = 50\n"
        "reconnect_max_ms = 500\n"
    )
    with running_hub(tmp_path, {"RUST_LOG": "info"}, ["--config", str(config)]) as hub:
        yield hub


def subscribe_client(hub: Hub):
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


def vm_event(vm_id: int, name: str, state: str, lcm: str, previous: str | None = None,
             host: str | None = None, service_id: int | None = None) -> tuple[str, dict]:
    """`VM_STATE_CHANGED`; `current_state` is the LCM state while ACTIVE, else the state."""
    current = (lcm if state == "ACTIVE" else state).lower()
    body = {"source": "opennebula", "vm_id": vm_id, "name": name, "current_state": current}
    if previous is not None:
        body["previous_state"] = previous
    body |= {"state": state, "lcm_state": lcm}
    if host is not None:
        body["host"] = host
    if service_id is not None:
        body["service_id"] = service_id
    return "VM_STATE_CHANGED", body


HEALTH = {"MONITORED": "healthy", "ERROR": "unhealthy", "INIT": "initializing",
          "DISABLED": "disabled", "OFFLINE": "offline"}


def host_events(host_id: int, name: str, state: str, previous: str | None = None
                ) -> list[tuple[str, dict]]:
    """`HOST_STATE_CHANGED`, then `HOST_HEALTH_UPDATE` (every change here changes health)."""
    changed = {"source": "opennebula", "host_id": host_id, "name": name, "state": state}
    health = {"source": "opennebula", "host_id": host_id, "name": name, "state": HEALTH[state]}
    if previous is not None:
        changed["previous_state"] = previous
        health["previous_state"] = HEALTH[previous]
    changed["health"] = HEALTH[state]
    return [("HOST_STATE_CHANGED", changed), ("HOST_HEALTH_UPDATE", health)]


def api_event(call: str, success: bool, resource_id: int | None = None,
              error: str | None = None) -> tuple[str, dict]:
    body = {"source": "opennebula", "call": call, "success": success}
    if resource_id is not None:
        body["resource_id"] = resource_id
    if error is not None:
        body["error"] = error
    return "API_CALL", body


NODE_1 = ("node-1", 3)


# --------------------------------------------------------------------------- #


def test_a_vm_lifecycle_host_errors_services_and_api_calls_reach_websocat_once_each(
        tmp_path, one_port, zmq_context):
    # onehem-server.rb's subscription: every EVENT, and RETRY.
    ledger = Ledger(subscribe=["EVENT ", "RETRY"])
    with bridge_hub(tmp_path, one_port, ledger.subscribe) as hub, \
            subscribe_client(hub) as client:
        assert_welcome(client.next_frame(), ["orchestrator", "global"])
        one = HookManager(zmq_context, one_port)
        probes = wait_subscribed(hub, one)
        ledger.probes(probes)
        assert bridge_status(hub)["connected"] is True

        web = Vm(42, "web-1")
        node = Host(3, "node-1", state="INIT")
        db = Vm(43, "db-0", uname="r&d", service_id=7)  # a user name oned writes unescaped

        # one.vm.allocate "A:ss" + the hold flag the OCA adds: session, template, false (as
        # api_value writes a boolean: 0). The template's start script has
        # `&&` (IN 2, unescaped: an ill-formed document); EXTRA is the new VM (to_xml).
        template = ('NAME="web-1"\nCPU="1"\nMEMORY="768"\n'
                    'CONTEXT=[START_SCRIPT="apt-get update && apt-get -y install nginx"]')
        allocated = api_document(
            "one.vm.allocate", ["****", template, "0"], SUCCESS, "42",
            extra=f"<VM><ID>42</ID><UID>0</UID><GID>0</GID><UNAME>oneadmin</UNAME>"
                  f"<GNAME>oneadmin</GNAME><NAME>web-1</NAME>{permissions_xml()}"
                  "<STATE>1</STATE><LCM_STATE>0</LCM_STATE></VM>")
        assert not well_formed(allocated)  # `&&` in IN 2
        assert not well_formed(db.document(("INIT", "LCM_INIT")))  # `r&d` in UNAME
        phase_one = [
            (api_messages(allocated), [api_event("one.vm.allocate", True, 42)], None),
            (web.change("PENDING", "LCM_INIT"), [vm_event(42, "web-1", "PENDING", "LCM_INIT")],
             None),
            # The host was INIT (its PREV_STATE), but the hub has not seen it before.
            (node.change("MONITORED"), host_events(3, "node-1", "MONITORED"), None),
            (web.change("ACTIVE", "PROLOG", deploy_on=NODE_1),
             [vm_event(42, "web-1", "ACTIVE", "PROLOG", "pending", "node-1")], None),
            (web.change("ACTIVE", "BOOT"),
             [vm_event(42, "web-1", "ACTIVE", "BOOT", "prolog", "node-1")], None),
            (web.change("ACTIVE", "RUNNING"),
             [vm_event(42, "web-1", "ACTIVE", "RUNNING", "boot", "node-1")], None),
            # A VM of OneFlow service 7: three keys, one event.
            (db.change("ACTIVE", "RUNNING", deploy_on=NODE_1),
             [vm_event(43, "db-0", "ACTIVE", "RUNNING", None, "node-1", service_id=7)], None),
        ]
        assert [len(m) for m, _, _ in phase_one] == [1, 2, 2, 2, 2, 2, 3]
        assert phase_one[2][0][0][0] == "EVENT HOST 3/MONITORED/ "
        assert phase_one[2][0][1][0] == "EVENT STATE HOST/MONITORED//3 "
        assert [key for key, _ in phase_one[-1][0]] == [
            "EVENT VM 43/ACTIVE/RUNNING ", "EVENT STATE VM/ACTIVE/RUNNING/43 ",
            "EVENT SERVICE 7 "]
        for messages, events, skip in phase_one:
            one.send(messages)
            ledger.sent(messages, events=len(events), skip=skip)
        expect_events(client, [event for _, events, _ in phase_one for event in events])
        # Every copy is counted before the publisher goes away.
        ledger.settled(hub)

        # OpenNebula restarts: the publisher goes away and comes back on the same port.
        one.close()
        poll_until(lambda: bridge_status(hub)["connected"] is False, 10,
                   "the bridge to notice the publisher is gone")
        one = HookManager(zmq_context, one_port)
        probes_after_restart = wait_subscribed(hub, one)
        ledger.probes(probes_after_restart)
        probes += probes_after_restart

        # one.vm.disksaveas "A:siissi": VM 42, disk 0, an image name with `&` and `<`, no type,
        # no snapshot. ImagePool::allocate refuses the name (PoolObjectSQL::name_is_valid):
        # ALLOCATE, the error text quotes the `&`, and resp_id is still the VM (set first).
        saveas_error = ("[one.vm.disksaveas] Error allocating a new image. "
                        "Invalid NAME, char '&' is not allowed")
        saveas = api_document("one.vm.disksaveas", ["****", "42", "0", "db&cache <nightly>", "",
                                                    "-1"], ALLOCATE, saveas_error, resp_id=42)
        # one.vm.rename "A:sis" to a name with `<` and `&`: PoolObjectSQL::set_name refuses it,
        # ACTION, and resp_id stays -1: no resource_id.
        rename_error = "[one.vm.rename] Invalid NAME, char '<' is not allowed"
        rename = api_document("one.vm.rename", ["****", "42", "web<1> & co"], ACTION,
                              rename_error)
        assert not well_formed(saveas) and not well_formed(rename)
        # The record of a hook run on VM 42's RUNNING, retried (`onehook log <hook> --retry`).
        hook_arguments = b64(web.document(("ACTIVE", "BOOT")))
        phase_two = [
            # The bridge remembered the host's and VM 42's states across the reconnection.
            (node.change("ERROR"), host_events(3, "node-1", "ERROR", "MONITORED"), None),
            (web.change("ACTIVE", "SHUTDOWN_POWEROFF"),
             [vm_event(42, "web-1", "ACTIVE", "SHUTDOWN_POWEROFF", "running", "node-1")], None),
            (web.change("POWEROFF", "LCM_INIT"),
             [vm_event(42, "web-1", "POWEROFF", "LCM_INIT", "shutdown_poweroff", "node-1")],
             None),
            (node.change("MONITORED"), host_events(3, "node-1", "MONITORED", "ERROR"), None),
            (retry_messages(5, hook_arguments, "node-1"), [], "retry"),
            (web.change("ACTIVE", "BOOT_POWEROFF"),
             [vm_event(42, "web-1", "ACTIVE", "BOOT_POWEROFF", "poweroff", "node-1")], None),
            (web.change("ACTIVE", "RUNNING"),
             [vm_event(42, "web-1", "ACTIVE", "RUNNING", "boot_poweroff", "node-1")], None),
            (api_messages(saveas),
             [api_event("one.vm.disksaveas", False, 42, saveas_error)], None),
            (api_messages(rename), [api_event("one.vm.rename", False, None, rename_error)],
             None),
            (image_messages(0, "ubuntu-22.04", "READY", previous="USED"), [], "image"),
            (vnet_messages(1, "private", "READY"), [], "net"),
            (web.change("ACTIVE", "EPILOG"),
             [vm_event(42, "web-1", "ACTIVE", "EPILOG", "running", "node-1")], None),
            (web.change("DONE", "LCM_INIT"),
             [vm_event(42, "web-1", "DONE", "LCM_INIT", "epilog", "node-1")], None),
        ]
        assert phase_two[-3][0][0][0] == "EVENT NET 1/READY/ "
        assert phase_two[-3][0][1][0] == "EVENT STATE NET/READY//1 "
        [(retry_key, retry_content)] = phase_two[4][0]
        assert retry_key == "RETRY" and retry_content.endswith(" "), phase_two[4]
        for messages, events, skip in phase_two:
            one.send(messages)
            ledger.sent(messages, events=len(events), skip=skip)
        expect_events(client, [event for _, events, _ in phase_two for event in events])
        status = ledger.settled(hub)
        one.close()

    # The ledger's sums, spelt out. 20 events: 10 changes of VM 42, 1 of VM 43, 3 host
    # changes x 2 events, 3 API calls. Copies: one per VM 42 change, one per host change, two
    # of the service VM, one each of the image and the network, one per wait_subscribed.
    assert status["published"] == 20, status
    assert status["skipped_by"] == {"copies": 10 + 3 + 2 + 1 + 1 + 2, "not_forwarded": 0,
                                    "retry": 1, "image": 1 + probes, "net": 1,
                                    "other_objects": 0}, status
    assert status["malformed"] == dict.fromkeys(MALFORMED_KINDS, 0), status
    # 14 messages before the restart, 23 after, the probes and their 2 copies.
    assert status["received"] == 14 + 23 + probes + 2, status
    assert status["connected"] is True and status["connections"] == 2, status
    assert status["tracked"] == {"vms": 1, "hosts": 1}, status  # VM 42 forgotten at DONE


def test_malformed_messages_are_skipped_counted_and_logged_once_per_kind(
        tmp_path, one_port, zmq_context):
    ledger = Ledger(subscribe=["EVENT "])
    with bridge_hub(tmp_path, one_port) as hub:
        with subscribe_client(hub) as client:
            assert_welcome(client.next_frame(), ["orchestrator", "global"])
            one = HookManager(zmq_context, one_port)
            probes = wait_subscribed(hub, one)
            ledger.probes(probes)

            db = Vm(7, "db", host=NODE_1)
            running = db.change("ACTIVE", "RUNNING")
            (vm_key, vm_content), (state_key, _) = running
            booting = Vm(7, "db", host=NODE_1).change("ACTIVE", "BOOT")[0][1]
            in_service_5 = Vm(9, "cache", service_id=5, host=NODE_1).change("ACTIVE", "RUNNING")
            # "Billion laughs": 10^9 "lol"s (3 GB) once expanded, 1 kB as sent.
            entities = ['<!ENTITY lol "lol">'] + [
                f'<!ENTITY lol{i} "{("&lol%s;" % (i - 1 if i > 1 else "")) * 10}">'
                for i in range(1, 10)]
            billion_laughs = (
                f'<?xml version="1.0"?><!DOCTYPE lolz [{"".join(entities)}]>'
                "<HOOK_MESSAGE><HOOK_TYPE>API</HOOK_TYPE><CALL>one.vm.allocate</CALL>"
                "<CALL_INFO><RESULT>1</RESULT><PARAMETERS>&lol9;</PARAMETERS></CALL_INFO>"
                "</HOOK_MESSAGE>")
            assert '<!ENTITY lol9 "&lol8;&lol8;' in billion_laughs, billion_laughs

            # frames: a key alone, and a third frame.
            one.send_frames([vm_key.encode()])
            one.send_frames([vm_key.encode(), vm_content.encode(), b"extra"])
            ledger.bad("frames")
            ledger.bad("frames")
            # unknown_key: a VM key without its LCM state, a key of no shape at all.
            one.send([("EVENT VM 7/ACTIVE/ ", vm_content), ("EVENT BOGUS thing", vm_content)])
            ledger.bad("unknown_key")
            ledger.bad("unknown_key")
            # base64, then its copy under the second key: counted once, the copy as a copy.
            one.send([(vm_key, "this is not base64!"), (state_key, "this is not base64!")])
            ledger.bad("base64", copies=1)
            one.send([("EVENT HOST 3/ERROR/ ", "%%%%")])
            ledger.bad("base64")
            # xml: the entity bomb first (refused, not expanded: the DTD is not read), then a
            # truncated document under both keys (counted once).
            one.send(api_messages(billion_laughs))
            ledger.bad("xml")
            one.send(state_messages(state_keys("VM", 7, "ACTIVE", "RUNNING"),
                                    "<HOOK_MESSAGE><HOOK_TYPE>STATE</HOOK_TYPE><VM>"))
            ledger.bad("xml", copies=1)
            # schema: a key whose id is not the document's RESOURCE_ID (VM 7's document under
            # VM 8's key), a service key that is not the document's SERVICE_ID.
            one.send([("EVENT VM 8/ACTIVE/BOOT ", booting)])
            ledger.bad("schema")
            one.send([("EVENT SERVICE 6 ", in_service_5[0][1])])
            ledger.bad("schema")

            one.send(running)
            ledger.sent(running, events=1)
            # Everything malformed was skipped: the next frame is the good event.
            expect_events(client, [vm_event(7, "db", "ACTIVE", "RUNNING", None, "node-1")])
            status = ledger.settled(hub)
            one.close()

    assert status["malformed"] == {"frames": 2, "unknown_key": 2, "base64": 2, "xml": 2,
                                   "schema": 2}, status
    assert status["published"] == 1, status
    # Copies: of the malformed base64 and xml contents, of the good change, of the last probe.
    assert status["skipped_by"] == {"copies": 4, "not_forwarded": 0, "retry": 0,
                                    "image": probes, "net": 0, "other_objects": 0}, status
    assert status["received"] == 14 + probes + 1, status
    assert status["tracked"] == {"vms": 1, "hosts": 0}, status

    # One warning per kind, never one per message.
    # The hub's stderr is not a terminal, so its log lines are JSON (`log.format = auto`).
    log = (hub.log_dir / "hub.stderr.log").read_text()
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    warnings = [line for line in lines if line["level"] == "WARN"
                and "skipped a malformed OpenNebula message" in line["fields"]["message"]]
    kinds = sorted(line["fields"]["kind"] for line in warnings)
    assert kinds == ["base64", "frames", "schema", "unknown_key", "xml"], warnings
    [bomb] = [json.dumps(line) for line in warnings if line["fields"]["kind"] == "xml"]
    assert "EVENT API one.vm.allocate 1" in bomb and "DTD" in bomb, bomb


def test_a_block_subscribed_to_service_keys_only_gets_each_service_vm_change_once(
        tmp_path, one_port, zmq_context):
    ledger = Ledger(subscribe=["EVENT SERVICE "])
    with bridge_hub(tmp_path, one_port, ledger.subscribe) as hub, \
            subscribe_client(hub) as client:
        assert_welcome(client.next_frame(), ["orchestrator", "global"])
        one = HookManager(zmq_context, one_port)
        db = Vm(43, "db-0", service_id=7)
        web = Vm(42, "web-1")
        node = Host(3, "node-1")

        # The probe is the service VM's first change, sent whole until the bridge publishes
        # it: only its SERVICE key reaches the bridge.
        first = db.change("PENDING", "LCM_INIT")
        sends = probe_with(hub, one, first)
        steps = [
            (web.change("PENDING", "LCM_INIT"), []),  # in no service: never sent to this block
            (db.change("ACTIVE", "PROLOG", deploy_on=NODE_1),
             [vm_event(43, "db-0", "ACTIVE", "PROLOG", "pending", "node-1", 7)]),
            (node.change("MONITORED"), []),
            (db.change("ACTIVE", "BOOT"),
             [vm_event(43, "db-0", "ACTIVE", "BOOT", "prolog", "node-1", 7)]),
            (image_messages(0, "ubuntu-22.04", "READY"), []),
            (db.change("ACTIVE", "RUNNING"),
             [vm_event(43, "db-0", "ACTIVE", "RUNNING", "boot", "node-1", 7)]),
        ]
        for messages, events in steps:
            one.send(messages)
            ledger.sent(messages, events=len(events))
        expect_events(client, [vm_event(43, "db-0", "PENDING", "LCM_INIT", service_id=7)]
                      + [event for _, events in steps for event in events])
        repeats = ledger.repeated(hub, first, sends)
        status = ledger.settled(hub)
        one.close()
    # One message per service VM change, and copies of the probe only.
    assert status["received"] == 4 + repeats and status["published"] == 4, status
    assert status["skipped"] == status["skipped_by"]["copies"] == repeats, status
    assert status["tracked"] == {"vms": 1, "hosts": 0}, status


def test_a_block_subscribed_to_vm_state_keys_only_gets_each_vm_change_once(
        tmp_path, one_port, zmq_context):
    ledger = Ledger(subscribe=["EVENT STATE VM/"])
    with bridge_hub(tmp_path, one_port, ledger.subscribe) as hub, \
            subscribe_client(hub) as client:
        assert_welcome(client.next_frame(), ["orchestrator", "global"])
        one = HookManager(zmq_context, one_port)
        web = Vm(42, "web-1")
        db = Vm(43, "db-0", service_id=7)
        node = Host(3, "node-1")

        first = web.change("PENDING", "LCM_INIT")
        sends = probe_with(hub, one, first)
        # one.vm.deploy "A:siibis": VM 42 on host 3, not enforced, any datastore.
        deploy = api_document("one.vm.deploy", ["****", "42", "3", "0", "-1", ""], SUCCESS, "42")
        steps = [
            (web.change("ACTIVE", "PROLOG", deploy_on=NODE_1),
             [vm_event(42, "web-1", "ACTIVE", "PROLOG", "pending", "node-1")]),
            (node.change("MONITORED"), []),
            (api_messages(deploy), []),
            (web.change("ACTIVE", "BOOT"),
             [vm_event(42, "web-1", "ACTIVE", "BOOT", "prolog", "node-1")]),
            (web.change("ACTIVE", "RUNNING"),
             [vm_event(42, "web-1", "ACTIVE", "RUNNING", "boot", "node-1")]),
            # A service VM: of its three keys, this block gets `EVENT STATE VM/...` only.
            (db.change("ACTIVE", "RUNNING", deploy_on=NODE_1),
             [vm_event(43, "db-0", "ACTIVE", "RUNNING", None, "node-1", 7)]),
            (image_messages(0, "ubuntu-22.04", "USED", previous="READY"), []),
            (retry_messages(5, b64(web.document(("ACTIVE", "BOOT")))), []),
            (web.change("ACTIVE", "SHUTDOWN_POWEROFF"),
             [vm_event(42, "web-1", "ACTIVE", "SHUTDOWN_POWEROFF", "running", "node-1")]),
            (web.change("POWEROFF", "LCM_INIT"),
             [vm_event(42, "web-1", "POWEROFF", "LCM_INIT", "shutdown_poweroff", "node-1")]),
            (vnet_messages(1, "private", "READY"), []),
            (web.change("ACTIVE", "BOOT_POWEROFF"),
             [vm_event(42, "web-1", "ACTIVE", "BOOT_POWEROFF", "poweroff", "node-1")]),
            (web.change("ACTIVE", "RUNNING"),
             [vm_event(42, "web-1", "ACTIVE", "RUNNING", "boot_poweroff", "node-1")]),
            (web.change("ACTIVE", "EPILOG"),
             [vm_event(42, "web-1", "ACTIVE", "EPILOG", "running", "node-1")]),
            (web.change("DONE", "LCM_INIT"),
             [vm_event(42, "web-1", "DONE", "LCM_INIT", "epilog", "node-1")]),
        ]
        for messages, events in steps:
            one.send(messages)
            ledger.sent(messages, events=len(events))
        expect_events(client, [vm_event(42, "web-1", "PENDING", "LCM_INIT")]
                      + [event for _, events in steps for event in events])
        repeats = ledger.repeated(hub, first, sends)
        status = ledger.settled(hub)
        one.close()
    # Ten changes of VM 42 and one of VM 43, one message each; copies of the probe only.
    assert status["received"] == 11 + repeats and status["published"] == 11, status
    assert status["skipped"] == status["skipped_by"]["copies"] == repeats, status
    assert status["tracked"] == {"vms": 1, "hosts": 0}, status  # VM 42 forgotten at DONE
