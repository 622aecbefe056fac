#!/usr/bin/env python3
"""Resident memory of one full history channel, as docs/operations.md reports it.

    cargo build --release
    scripts/history-memory.py target/release/events-hub 8000

Starts the hub on 127.0.0.1:0 with its defaults, publishes 12,000 events of about SIZE bytes on
`pdfm` in batches of 100, and prints how many the history kept and the hub's VmRSS before and
after. Loopback only; stops the hub at the end.
"""
import json
import os
import subprocess
import sys
import urllib.request

binary, size = sys.argv[1], int(sys.argv[2])
env = dict(os.environ, EVENTS_HUB__AUTH__JWT_SECRET="history-memory", EVENTS_HUB__LOG__LEVEL="warn")


def token(claim):
    out = subprocess.run([binary, "mint-token", "--sub", "probe", "--claims", claim],
                         env=env, capture_output=True, text=True, check=True).stdout
    return out.strip().splitlines()[-1].strip()


hub = subprocess.Popen([binary, "--listen", "127.0.0.1:0"], env=env, stdout=subprocess.PIPE, text=True)
try:
    addr = hub.stdout.readline().split("http://")[1].strip()

    def rss_mib():
        with open(f"/proc/{hub.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    before = rss_mib()
    publisher, reader = token("EVENTS_PUBLISH"), token("READ_ONLY")
    pad = "x" * size
    for i in range(120):
        batch = [{"event_type": "pdfm", "message": "N", "body": {"n": i * 100 + k, "pad": pad}}
                 for k in range(100)]
        request = urllib.request.Request(
            f"http://{addr}/v1/events", data=json.dumps(batch).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {publisher}"})
        urllib.request.urlopen(request).read()
    request = urllib.request.Request(f"http://{addr}/v1/events?event_type=pdfm&since=0&limit=1",
                                     headers={"Authorization": f"Bearer {reader}"})
    page = json.loads(urllib.request.urlopen(request).read())
    kept = page["last_seq"] - page["oldest_seq"] + 1
    print(f"events of ~{size} B: kept {kept} (seq {page['oldest_seq']}..{page['last_seq']}); "
          f"VmRSS {before:.1f} MiB before, {rss_mib():.1f} MiB after")
finally:
    hub.terminate()
    hub.wait()
