"""A real Prometheus Alertmanager (Debian's `prometheus-alertmanager`) notifying the hub's
`POST /v1/sources/alertmanager` receiver.

Two Alertmanagers with the same configuration and no gossip between them, as an HA pair is
during a partition (or when `--cluster.listen-address` is left empty): Prometheus sends every
alert to both, both notify, and the hub must publish each alert once. The alerts are posted the
way Prometheus posts them (`POST /api/v2/alerts`, explicit `startsAt`, and `endsAt` when it
resolves; `notifier/notifier.go` in `prometheus/prometheus`), and the notification is whatever
Alertmanager itself sends (`notify/webhook/webhook.go`, `template/template.go`; a firing alert's
`endsAt` is zeroed by `alert.Alerts` in `alert/alert.go`).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.request
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import websockets.sync.client

from conftest import _stop_process, free_port, parse_frame, poll_until, running_hub

ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")

pytestmark = pytest.mark.skipif(
    ALERTMANAGER is None,
    reason="prometheus-alertmanager is not installed (scripts/install-test-deps.sh installs it)",
)

CONFIG = """\
route:
  receiver: events-hub
  group_by: [alertname, instance]
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 4h
receivers:
  - name: events-hub
    webhook_configs:
      - url: {url}
        send_resolved: true
        http_config:
          authorization:
            type: Bearer
            credentials_file: {token_file}
"""


@contextmanager
def alertmanager(tmp_path: Path, name: str, hub_url: str, token: str):
    """One Alertmanager on a free loopback port, gossip off, stopped at the end."""
    home = tmp_path / name
    home.mkdir()
    token_file = home / "events-hub.jwt"
    token_file.write_text(token)
    config = home / "alertmanager.yml"
    config.write_text(CONFIG.format(url=f"{hub_url}/v1/sources/alertmanager",
                                    token_file=token_file))
    port = free_port()
    log = open(home / "alertmanager.log", "w")
    proc = subprocess.Popen(
        [ALERTMANAGER, f"--config.file={config}", f"--storage.path={home / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=",
         "--log.level=debug"],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        poll_until(lambda: _ready(base), 30, f"{name} /-/ready")
        yield base
    finally:
        _stop_process(proc)
        log.close()


def _ready(base: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/-/ready", timeout=1) as reply:
            return reply.status == 200
    except OSError:
        return False


def post_alerts(base: str, alerts: list[dict]) -> None:
    request = urllib.request.Request(
        f"{base}/api/v2/alerts", data=json.dumps(alerts).encode(), method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as reply:
        assert reply.status == 200, reply.status


def webhook_metric(base: str, name: str) -> float:
    """`name` summed over this Alertmanager's webhook integration, from its /metrics."""
    with urllib.request.urlopen(f"{base}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and 'integration="webhook"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def webhook_sends(base: str) -> float:
    """Webhook requests this Alertmanager has finished (observed once the hub answered,
    `notify/retry_stage.go`), none of them failed."""
    assert webhook_metric(base, "alertmanager_notifications_failed_total") == 0
    return webhook_metric(base, "alertmanager_notification_latency_seconds_count")


def rfc3339(at: datetime) -> str:
    return at.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def test_an_alertmanager_pair_notifies_twice_and_the_hub_publishes_each_alert_once(tmp_path):
    env = {"EVENTS_HUB__SOURCES__ALERTMANAGER__ENABLED": "true"}
    with running_hub(tmp_path, extra_env=env) as hub:
        token = hub.mint_token("alertmanager", "EVENTS_PUBLISH")
        reader = hub.mint_token("sre", "READ_ONLY")
        with alertmanager(tmp_path, "am-a", hub.http, token) as am_a, \
                alertmanager(tmp_path, "am-b", hub.http, token) as am_b, \
                websockets.sync.client.connect(
                    f"{hub.ws}/v1/ws/subscribe?event_types=system",
                    additional_headers={"Authorization": f"Bearer {reader}"},
                    open_timeout=10) as ws:
            parse_frame(ws.recv(timeout=10))  # the welcome
            started = datetime.now(timezone.utc) - timedelta(minutes=5)
            alert = {
                "labels": {"alertname": "HostDown", "instance": "esx-1:9100",
                           "severity": "critical"},
                "annotations": {"summary": "esx-1 is not answering"},
                "startsAt": rfc3339(started),
                "generatorURL": "http://prometheus:9090/graph?g0.expr=up%3D%3D0",
            }
            for base in (am_a, am_b):
                post_alerts(base, [alert])
            poll_until(lambda: webhook_sends(am_a) >= 1 and webhook_sends(am_b) >= 1, 30,
                       "both Alertmanagers to notify the firing alert")
            firing = parse_frame(ws.recv(timeout=10))
            assert firing["event_type"] == "system"
            assert firing["message"] == "ALERT_FIRING", firing
            body = firing["body"]
            assert body["labels"]["instance"] == "esx-1:9100"
            assert body["annotations"]["summary"] == "esx-1 is not answering"
            assert body["generator_url"].startswith("http://prometheus:9090/graph")
            assert body["receiver"] == "events-hub"

            # Prometheus resolves by sending the alert again with endsAt in the past.
            resolved = {**alert, "endsAt": rfc3339(datetime.now(timezone.utc) - timedelta(seconds=1))}
            for base in (am_a, am_b):
                post_alerts(base, [resolved])
            poll_until(lambda: webhook_sends(am_a) >= 2 and webhook_sends(am_b) >= 2, 30,
                       "both Alertmanagers to notify the resolution")
            resolution = parse_frame(ws.recv(timeout=10))
            assert resolution["message"] == "ALERT_RESOLVED", resolution
            assert resolution["body"]["fingerprint"] == body["fingerprint"]

            # Four notifications reached the hub; the history kept two events.
            page = json.loads(urllib.request.urlopen(urllib.request.Request(
                f"{hub.http}/v1/events?event_type=system",
                headers={"Authorization": f"Bearer {reader}"}), timeout=5).read())
            messages = [e["message"] for e in page["events"]]
            assert messages == ["ALERT_FIRING", "ALERT_RESOLVED"], messages
