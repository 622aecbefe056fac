# The "Python (websockets)" snippet of the Events Hub user guide, as a user would
# run it today, with three changes:
#   * `extra_headers=` is spelled `additional_headers=` (websockets >= 14 renamed it);
#   * it sends one health ping as soon as the welcome frame arrives (the guide's
#     snippet only answers pings, and the hub never sends a `health` ping itself);
#   * it stops after the pong to that ping (and after E2E_CLIENT_TIMEOUT seconds at
#     most), so that the test can run it to completion.
# Each frame is printed as JSON after "Event received: " so the test can read it.
#
# Run: DEVOPS_TOKEN=... DEVOPS_HOST=ws://127.0.0.1:8080 python3 -u guide_python_client.py
import asyncio
import json
import os

import websockets

TOKEN = os.environ["DEVOPS_TOKEN"]
HOST = os.environ["DEVOPS_HOST"]  # e.g., "ws://127.0.0.1:8080"
EVENT_TYPES = "pdfm,health"
WELCOME = "WebSocket connection established subscribed to global by default"


async def main():
  uri = f"{HOST}/v1/ws/subscribe?event_types={EVENT_TYPES}"
  headers = {"Authorization": f"Bearer {TOKEN}"}

  async with websockets.connect(uri, additional_headers=headers) as ws:
    print("Connected to Events Hub")
    ping_id = None

    async for raw in ws:
      event = json.loads(raw)
      print("Event received:", json.dumps(event))

      if event.get("event_type") == "health" and event.get("message") == "ping":
        await ws.send(json.dumps({
          "type": "health",
          "message": "ping",
          "id": f"ping-{asyncio.get_event_loop().time()}"
        }))

      if event.get("event_type") == "global" and event.get("message") == WELCOME:
        ping_id = f"ping-{asyncio.get_event_loop().time()}"
        ping = {"type": "health", "message": "ping", "id": ping_id}
        await ws.send(json.dumps(ping))
        print("Ping sent:", json.dumps(ping))

      if event.get("message") == "pong" and event.get("ref_id") == ping_id:
        print("Pong received, closing")
        break


asyncio.run(asyncio.wait_for(main(), float(os.environ.get("E2E_CLIENT_TIMEOUT", "15"))))
