"""The web console (`GET /console`) in a real browser: Debian's chromium, driven by
playwright-core through tests/e2e/console_driver.mjs (both installed by
scripts/install-test-deps.sh).

One story, as a user would live it: load the page, paste a token, connect; an event published
with curl shows up; unsubscribing a channel stops its events while another channel's still
arrive; the hub restarts on the same port and the page reconnects by itself, resumes with
`since`/`epoch`, and shows the gap reason (the hub restarted). A screenshot is saved under
target/e2e-artifacts/ (its path is printed).

Nothing sleeps: the driver waits with playwright's waitFor* and a timeout, pytest reads the
driver's answers with a deadline.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import E2E_DIR, REPO_ROOT, Client, Hub, run_client, running_hub

CHROMIUM = Path("/usr/bin/chromium")
DRIVER = E2E_DIR / "console_driver.mjs"
PLAYWRIGHT = E2E_DIR / "node_modules" / "playwright-core"
ARTIFACTS = REPO_ROOT / "target" / "e2e-artifacts"
WAIT_MS = 15_000  # one browser-side wait
RECONNECT_MS = 40_000  # the restart: SIGTERM grace, start-up, and the page's back-off


def ask(driver: Client, cmd: str, timeout: float = 60.0, **args) -> dict:
    """One command to the driver, its answer; a failed command fails the test."""
    driver.type_line(json.dumps({"cmd": cmd, **args}))
    answer = driver.next_json(timeout=timeout)
    assert answer.get("ok"), f"{cmd} {args}: {answer}"
    return answer


@pytest.fixture
def browser() -> Client:
    node = shutil.which("node")
    if node is None or not CHROMIUM.is_file() or not PLAYWRIGHT.is_dir():
        pytest.fail("node, /usr/bin/chromium or tests/e2e/node_modules/playwright-core missing: "
                    "run scripts/install-test-deps.sh")
    with run_client([node, str(DRIVER)], name="console_driver") as driver:
        ready = driver.next_json(timeout=60)
        assert ready.get("ready"), ready
        yield driver
        driver.type_line(json.dumps({"cmd": "quit"}))


def test_console_streams_unsubscribes_and_resumes_after_a_restart(tmp_path: Path, browser: Client):
    first_dir = tmp_path / "first"
    first_dir.mkdir()
    with running_hub(first_dir) as hub:
        token = hub.mint_token("console-admin", "READ_ONLY,EVENTS_PUBLISH,EVENTS_ADMIN")

        # A refused handshake is explained in words (the page asks over plain HTTP), and the
        # page stops retrying: only another credential helps.
        refused = ask(browser, "refused", url=f"{hub.http}/console", token="not.a.jwt",
                      contains="401 unauthorized", timeout=WAIT_MS)
        assert "retrying will not help" in refused["problem"], refused

        opened = ask(browser, "open", url=f"{hub.http}/console", token=token, timeout=WAIT_MS)
        assert opened["status"] == 200
        assert "connect-src 'self' ws: wss:" in opened["csp"]
        assert opened["subscriptions"] == ["pdfm", "orchestrator", "global"], opened

        # An event published with curl appears, and its JSON can be opened.
        assert hub.publish(token, {"event_type": "pdfm", "message": "CONSOLE_PDFM_1",
                                   "body": {"vm_id": "vm-7"}}).status == 202
        ask(browser, "wait_event", message="CONSOLE_PDFM_1", timeout=WAIT_MS)
        detail = ask(browser, "detail", message="CONSOLE_PDFM_1")["text"]
        assert json.loads(detail)["body"] == {"vm_id": "vm-7"}

        # The admin view is there for an EVENTS_ADMIN token.
        assert ask(browser, "admin_visible", timeout=WAIT_MS)["rows"] >= 1

        # Unsubscribe pdfm over HTTP: its next event stays away, orchestrator's arrives. The
        # orchestrator event is published after the pdfm one, on the same socket's queue.
        after = ask(browser, "unsubscribe", channel="pdfm", timeout=WAIT_MS)
        assert after["subscriptions"] == ["orchestrator", "global"], after
        assert hub.publish(token, {"event_type": "pdfm", "message": "CONSOLE_PDFM_2"}).status == 202
        assert hub.publish(token, {"event_type": "orchestrator",
                                   "message": "CONSOLE_ORCH_1"}).status == 202
        ask(browser, "wait_event", message="CONSOLE_ORCH_1", timeout=WAIT_MS)
        assert ask(browser, "count_event", message="CONSOLE_PDFM_2")["count"] == 0

        # The filter box narrows the list to matching messages and bodies.
        assert ask(browser, "filter", text="vm-7")["shown"] == 1
        assert ask(browser, "filter", text="")["shown"] >= 3

        # Restart on the same port: a new epoch, the history is gone.
        assert hub.stop() == 0
        second_dir = tmp_path / "second"
        second_dir.mkdir()
        restarted = Hub(hub.binary, hub.port, hub.env, second_dir)
        restarted.start()
        try:
            resumed = ask(browser, "wait_resume", contains="restarted", timeout=RECONNECT_MS)
            assert "gap" in resumed["resume"], resumed
            assert "the hub restarted" in resumed["resume"], resumed
            assert hub.publish(token, {"event_type": "orchestrator",
                                       "message": "CONSOLE_ORCH_2"}).status == 202
            ask(browser, "wait_event", message="CONSOLE_ORCH_2", timeout=WAIT_MS)
            ask(browser, "detail", message="CONSOLE_ORCH_2")

            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            shot = ask(browser, "screenshot", path=str(ARTIFACTS / "console.png"))["path"]
            print(f"console screenshot: {shot}")
            assert Path(shot).stat().st_size > 0
        finally:
            assert restarted.stop() == 0, restarted.logs()
