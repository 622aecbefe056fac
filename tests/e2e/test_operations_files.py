"""End-to-end: the shipped operations files (deploy/) against the built hub.

- `/metrics` of a running hub (with the demo source, so the source families exist), after a
  subscriber, a publish, a refused handshake, an administrator's disconnect and a resume, is
  read with the official Python Prometheus client's OpenMetrics parser: it must parse whole,
  and follow the naming rules (SPEC section 11).
- Every metric the Grafana dashboard and the alert rules name must exist in that scrape, so
  the shipped files cannot drift from the code.
- `promtool check rules/config` and `systemd-analyze verify`, where those tools are installed;
  the unit's hardening keys are checked with configparser everywhere.
"""

from __future__ import annotations

import configparser
import json
import re
import shutil
import subprocess
import tomllib
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from conftest import (
    REPO_ROOT,
    Hub,
    assert_welcome,
    curl,
    hub_binary,
    poll_until,
    require_tool,
    run_client,
    running_hub,
)

DEPLOY = REPO_ROOT / "deploy"
UNIT = DEPLOY / "events-hub.service"
DASHBOARD = DEPLOY / "grafana" / "events-hub-dashboard.json"
ALERT_RULES = DEPLOY / "prometheus" / "alert-rules.yml"
PROMETHEUS_YML = DEPLOY / "prometheus" / "prometheus.yml"

METRIC_NAME = re.compile(r"events_hub_[a-z_]+")
# A metric with a label selector: events_hub_x{code="4008", instance=~"$instance"}.
SELECTOR = re.compile(r"(events_hub_[a-z_]+)\{([^}]*)\}")
MATCHER = re.compile(r'([a-z_]+)\s*(=~|!~|!=|=)\s*"([^"]*)"')
SUFFIXES = ("_bucket", "_sum", "_count", "_total", "_info", "_created")
FORBIDDEN_LABELS = {"client_id", "ip"}

SYSTEM_EVENT = {"event_type": "system", "message": "MAINTENANCE", "body": {"window": "tonight"}}


def websocat(url: str, token: str) -> list[str]:
    return [require_tool("websocat"), url, "-H", f"Authorization: Bearer {token}"]


def scrape(hub: Hub) -> str:
    with urllib.request.urlopen(f"{hub.http}/metrics", timeout=5) as reply:
        assert reply.status == 200
        assert reply.headers["Content-Type"].startswith("application/openmetrics-text"), \
            reply.headers["Content-Type"]
        return reply.read().decode()


def sample_value(text: str, name: str, **labels: str) -> float | None:
    """One sample's value from a scrape, None when it is absent."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return None


def admin_get(hub: Hub, token: str, path: str):
    reply = curl(f"{hub.http}{path}", "-H", f"Authorization: Bearer {token}")
    assert reply.status == 200, reply.raw
    return reply.json()


@pytest.fixture(scope="module")
def exposition(tmp_path_factory) -> Iterator[str]:
    """The `/metrics` text of a demo hub that saw a subscriber, a publish, a 401 handshake,
    an administrator's disconnect (4001) and a resume."""
    tmp = tmp_path_factory.mktemp("ops-hub")
    with running_hub(tmp, args=["--demo"]) as hub:
        reader = hub.mint_token("alice", "READ_ONLY")
        publisher = hub.mint_token("publisher", "READ_ONLY,EVENTS_PUBLISH")
        admin = hub.mint_token("admin", "EVENTS_ADMIN")

        # A refused handshake: no credential.
        refused = curl(f"{hub.http}/v1/ws/subscribe?event_types=system",
                       "-H", "Connection: Upgrade", "-H", "Upgrade: websocket",
                       "-H", "Sec-WebSocket-Version: 13",
                       "-H", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==")
        assert refused.status == 401, refused.raw

        url = f"{hub.ws}/v1/ws/subscribe?event_types=system"
        with run_client(websocat(url, reader)) as client:
            welcome = client.next_frame()
            client_id = assert_welcome(welcome, ["system", "global"])
            epoch = welcome["body"]["epoch"]
            reply = hub.publish(publisher, SYSTEM_EVENT)
            assert reply.status == 202, reply.raw
            event = client.next_frame()
            assert event["message"] == "MAINTENANCE", event

            listed = admin_get(hub, admin, "/v1/admin/clients")["clients"]
            assert [c["client_id"] for c in listed] == [client_id], listed
            gone = curl("-X", "DELETE", f"{hub.http}/v1/admin/clients/{client_id}",
                        "-H", f"Authorization: Bearer {admin}")
            assert gone.status == 200, gone.raw
            assert gone.json()["close_code"] == 4001, gone.raw
            # websocat keeps running while its stdin is open; the hub's side is what counts.
            poll_until(lambda: admin_get(hub, admin, "/v1/ws/stats")["total_clients"] == 0,
                       10, "the disconnected socket to be gone")
        resume = f"{url}&since=system:{event['seq']}&epoch={epoch}"
        with run_client(websocat(resume, reader)) as client:
            assert client.next_frame()["body"]["recovered"] is True

        poll_until(lambda: (sample_value(scrape(hub), "events_hub_resumes_total",
                                         outcome="recovered") or 0) >= 1
                   and (sample_value(scrape(hub), "events_hub_socket_closes_total",
                                     code="4001") or 0) >= 1,
                   10, "the resume and the 4001 close to be counted")
        yield scrape(hub)


def families(text: str) -> list:
    return list(text_string_to_metric_families(text))


def known_names(text: str) -> set[str]:
    """Family names and every sample name a query may use, including those of families
    with no samples yet (a counter `x` is queried as `x_total`)."""
    names = set()
    for family in families(text):
        names.add(family.name)
        names.update(s.name for s in family.samples)
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names.update(family.name + s for s in ("_bucket", "_sum", "_count"))
        elif family.type == "info":
            names.add(family.name + "_info")
    return names


# --------------------------------------------------------------------------- #
# The exposition                                                                #
# --------------------------------------------------------------------------- #


def test_metrics_parse_as_openmetrics_and_follow_the_naming_rules(exposition):
    assert exposition.endswith("# EOF\n")
    parsed = families(exposition)  # raises on any malformed line
    assert parsed, exposition
    for family in parsed:
        assert family.name.startswith("events_hub_"), family.name
        for sample in family.samples:
            assert sample.name.startswith("events_hub_"), sample.name
            if family.type == "counter":
                assert sample.name.endswith(("_total", "_created")), sample.name
            bad = FORBIDDEN_LABELS & set(sample.labels)
            assert not bad, f"unbounded label {bad} on {sample.name}"
    assert not re.search(r'\b(client_id|ip)="', exposition)


def test_metrics_count_what_happened(exposition):
    assert sample_value(exposition, "events_hub_events_published_total", channel="system") == 1
    assert sample_value(exposition, "events_hub_events_delivered_total", channel="system") == 1
    assert sample_value(exposition, "events_hub_handshakes_refused_total", status="401") == 1
    assert sample_value(exposition, "events_hub_socket_closes_total", code="4001") == 1
    assert sample_value(exposition, "events_hub_resumes_total", outcome="recovered") == 1
    assert sample_value(exposition, "events_hub_sockets_opened_total") == 2
    assert (sample_value(exposition, "events_hub_delivery_latency_seconds_count") or 0) >= 1
    assert (sample_value(exposition, "events_hub_source_events_published_total",
                         source="demo", index="0") or 0) >= 1
    assert sample_value(exposition, "events_hub_build_info") == 1


# --------------------------------------------------------------------------- #
# The shipped files name only metrics the hub has                               #
# --------------------------------------------------------------------------- #


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = []

    def walk(panels):
        for panel in panels:
            exprs.extend(t["expr"] for t in panel.get("targets", []) if "expr" in t)
            walk(panel.get("panels", []))

    walk(dashboard["panels"])
    return exprs


def rules_text() -> str:
    """The alert rules without their comments."""
    return "\n".join(line for line in ALERT_RULES.read_text().splitlines()
                     if not line.lstrip().startswith("#"))


def assert_names_exist(source: str, text: str, exposition: str) -> set[str]:
    known = known_names(exposition)
    used = set(METRIC_NAME.findall(text))
    assert used, f"{source} names no events_hub_ metric"
    missing = sorted(used - known)
    assert not missing, f"{source} names metrics the hub does not expose: {missing}"
    for name in used:
        assert name.endswith(SUFFIXES) or name in {f.name for f in families(exposition)}, name
    # Label values a selector pins must exist too (code="4008" on the closes counter).
    samples = [s for f in families(exposition) for s in f.samples]
    for name, matchers in SELECTOR.findall(text):
        for label, op, value in MATCHER.findall(matchers):
            if label == "instance" or op != "=":
                continue
            assert any(s.name == name and s.labels.get(label) == value for s in samples), \
                f"{source}: no {name}{{{label}={value!r}}} in the scrape"
    return used


def test_dashboard_names_only_live_metrics(exposition):
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["schemaVersion"] >= 36
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    exprs = dashboard_exprs()
    assert exprs
    used = assert_names_exist("dashboard", "\n".join(exprs), exposition)
    for name in ["events_hub_connections", "events_hub_subscriptions",
                 "events_hub_events_published_total", "events_hub_events_delivered_total",
                 "events_hub_delivery_latency_seconds_bucket", "events_hub_socket_closes_total",
                 "events_hub_handshakes_refused_total", "events_hub_resumes_total",
                 "events_hub_history_events", "events_hub_history_bytes",
                 "events_hub_source_connected", "events_hub_source_messages_skipped_total",
                 "events_hub_build_info"]:
        assert name in used, f"the dashboard has no panel on {name}"


def test_every_dashboard_panel_uses_the_datasource_input():
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]


def test_alert_rules_name_only_live_metrics(exposition):
    text = rules_text()
    used = assert_names_exist("alert-rules.yml", text, exposition)
    assert {"events_hub_socket_closes_total", "events_hub_handshakes_refused_total",
            "events_hub_source_connected", "events_hub_delivery_latency_seconds_bucket",
            "events_hub_connections"} <= used
    assert 'up{job="events-hub"} == 0' in text
    alerts = re.findall(r"^\s*- alert: (\S+)$", text, re.M)
    assert len(alerts) == 6, alerts
    for key in ("summary:", "description:", "runbook:"):
        assert text.count(key) == len(alerts), key
    for anchor in re.findall(r"docs/operations\.md#([a-z0-9-]+)", text):
        assert anchor in github_anchors(REPO_ROOT / "docs" / "operations.md"), anchor


def github_anchors(path: Path) -> set[str]:
    anchors = set()
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            title = re.sub(r"[^\w\- ]", "", title)
            anchors.add(title.replace(" ", "-"))
    return anchors


# --------------------------------------------------------------------------- #
# promtool                                                                      #
# --------------------------------------------------------------------------- #

PROMTOOL_SKIP = ("promtool not installed: Debian ships it only in the `prometheus` package "
                 "(about 320 MB installed with its dependencies), which "
                 "scripts/install-test-deps.sh does not install; `apt-get install prometheus` "
                 "to run this check")


@pytest.mark.parametrize("what, path", [("rules", ALERT_RULES), ("config", PROMETHEUS_YML)])
def test_promtool_accepts_the_prometheus_files(what, path):
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip(PROMTOOL_SKIP)
    done = subprocess.run([promtool, "check", what, path.name], capture_output=True,
                          text=True, cwd=path.parent, timeout=30)
    assert done.returncode == 0, f"promtool check {what} {path}:\n{done.stdout}{done.stderr}"
    assert "SUCCESS" in done.stdout + done.stderr


# --------------------------------------------------------------------------- #
# The systemd unit                                                              #
# --------------------------------------------------------------------------- #


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True,
                                       comment_prefixes=("#", ";"), empty_lines_in_values=False)
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read_string(UNIT.read_text())
    return parser


def test_unit_has_the_hardening_and_lifecycle_keys():
    service = unit()["Service"]
    expected = {
        "DynamicUser": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "NoNewPrivileges": "yes",
        "CapabilityBoundingSet": "",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "SystemCallFilter": "@system-service",
        "ExecReload": "/bin/kill -HUP $MAINPID",
        "KillSignal": "SIGTERM",
        "Restart": "on-failure",
        "RestartPreventExitStatus": "2",
        "EnvironmentFile": "-/etc/events-hub/env",
    }
    for key, value in expected.items():
        assert service.get(key) == value, f"{key}={service.get(key)!r}, want {value!r}"
    assert "AmbientCapabilities" not in service
    assert "#AmbientCapabilities=CAP_NET_BIND_SERVICE" in UNIT.read_text()
    exec_start = service["ExecStart"].split()
    assert exec_start[0] == "/usr/local/bin/events-hub"
    assert exec_start[exec_start.index("--config") + 1] == "/etc/events-hub/hub.toml"
    assert exec_start[exec_start.index("--log-format") + 1] == "json"

    defaults = tomllib.loads((REPO_ROOT / "config" / "default.toml").read_text())
    assert int(service["TimeoutStopSec"]) > defaults["server"]["shutdown_grace_secs"]
    assert int(service["LimitNOFILE"]) > defaults["admission"]["max_connections"] + 64
    assert unit()["Install"]["WantedBy"] == "multi-user.target"


def test_unit_command_line_is_one_the_binary_accepts():
    """ExecStart's arguments, with the shipped default.toml for /etc/events-hub/hub.toml, pass
    `check-config` (the same loading as `serve`)."""
    args = unit()["Service"]["ExecStart"].split()[1:]
    args[args.index("--config") + 1] = str(REPO_ROOT / "config" / "default.toml")
    assert args[-1] == "serve"
    argv = [str(hub_binary()), *args[:-1], "check-config", args[args.index("--config") + 1]]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30,
                          env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, f"{argv}: {done.stderr}"


def test_systemd_analyze_verifies_the_unit(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed (Debian package `systemd`)")
    # verify checks that ExecStart's binary exists: point it at the built one.
    copy = tmp_path / "events-hub.service"
    copy.write_text(UNIT.read_text().replace("/usr/local/bin/events-hub", str(hub_binary())))
    done = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True,
                          timeout=60)
    about_unit = [line for line in (done.stdout + done.stderr).splitlines()
                  if copy.name in line or "events-hub" in line]
    assert done.returncode == 0 and not about_unit, \
        f"systemd-analyze verify: rc {done.returncode}\n{done.stdout}{done.stderr}"


def test_operations_guide_points_at_the_shipped_unit():
    guide = (REPO_ROOT / "docs" / "operations.md").read_text()
    assert "deploy/events-hub.service" in guide
    # One source: the guide no longer carries a copy of the unit.
    assert "\n[Service]\n" not in guide
