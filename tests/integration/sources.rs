//! `[[sources.opennebula]]` in-process: a libzmq PUB socket plays the Hook Manager, a hub
//! started as the binary starts it publishes what the bridge maps, and shutdown stops the
//! bridge. (The end-to-end test, tests/e2e/test_opennebula.py, does the same with pyzmq and
//! the built binary.)

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use events_hub::config::OpenNebulaSource;
use events_hub::server::Stopped;
use serde_json::{Value, json};

use crate::common::*;

/// A PUB socket on 127.0.0.1, on a port the kernel picked.
struct HookManager {
    _context: zmq::Context,
    socket: zmq::Socket,
    endpoint: String,
}

impl HookManager {
    fn bind() -> Self {
        let context = zmq::Context::new();
        let socket = context.socket(zmq::PUB).expect("PUB socket");
        socket.set_linger(0).expect("linger");
        socket.bind("tcp://127.0.0.1:*").expect("bind");
        let endpoint = socket
            .get_last_endpoint()
            .expect("last endpoint")
            .expect("endpoint is UTF-8");
        Self {
            _context: context,
            socket,
            endpoint,
        }
    }

    fn send(&self, key: &str, xml: &str) {
        let content = STANDARD.encode(xml);
        self.socket
            .send_multipart([key.as_bytes(), content.as_bytes()], 0)
            .expect("send");
    }
}

fn source(endpoint: &str) -> OpenNebulaSource {
    OpenNebulaSource {
        reconnect_min_ms: 20,
        reconnect_max_ms: 200,
        ..OpenNebulaSource::with_endpoint(endpoint)
    }
}

fn status(hub: &TestHub) -> Value {
    hub.state.sources.status()["opennebula"][0].clone()
}

const VM_RUNNING: &str = "<HOOK_MESSAGE><HOOK_TYPE>STATE</HOOK_TYPE><HOOK_OBJECT>VM</HOOK_OBJECT>\
    <STATE>ACTIVE</STATE><LCM_STATE>RUNNING</LCM_STATE><RESOURCE_ID>9</RESOURCE_ID>\
    <REMOTE_HOST>node-2</REMOTE_HOST><VM><ID>9</ID><NAME>cache</NAME></VM></HOOK_MESSAGE>";

#[tokio::test]
async fn hook_manager_events_reach_subscribers_and_shutdown_stops_the_bridge() {
    let one = HookManager::bind();
    let endpoint = one.endpoint.clone();
    let mut hub = TestHub::start_with(|s| s.sources.opennebula = vec![source(&endpoint)]).await;
    let (mut ws, _) = hub.subscribe(ip(1), "sre", "orchestrator").await;

    // Slow joiner: send a message the bridge skips until it has seen one.
    eventually("the bridge to subscribe", || {
        one.send(
            "EVENT STATE IMAGE/READY/",
            "<HOOK_MESSAGE><HOOK_TYPE>STATE</HOOK_TYPE></HOOK_MESSAGE>",
        );
        status(&hub)["skipped"].as_u64() > Some(0)
    })
    .await;
    assert_eq!(status(&hub)["connected"], true);

    one.send("EVENT STATE VM/ACTIVE/RUNNING", VM_RUNNING);
    let frame = next_json(&mut ws).await;
    assert_eq!(frame["event_type"], "orchestrator");
    assert_eq!(frame["message"], "VM_STATE_CHANGED");
    assert_eq!(
        frame["body"],
        json!({"source": "opennebula", "vm_id": 9, "name": "cache", "current_state": "running",
               "state": "ACTIVE", "lcm_state": "RUNNING", "host": "node-2"})
    );

    // The bridge counts an event once Hub::publish returns, which can be just after the
    // subscriber has it.
    eventually("the event to be counted", || status(&hub)["published"] == 1).await;
    let (code, ready) = hub.get("/readyz").await;
    assert_eq!(code, 200);
    assert_eq!(ready["sources"]["opennebula"][0]["published"], 1);

    let started = Instant::now();
    assert_eq!(hub.shutdown().await, Stopped::Drained);
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(status(&hub)["connected"], false);
}

#[tokio::test]
async fn an_unreachable_hook_manager_neither_fails_readiness_nor_delays_shutdown() {
    // A port nothing listens on (bound, then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let endpoint = format!("tcp://127.0.0.1:{port}");
    let mut hub = TestHub::start_with(|s| s.sources.opennebula = vec![source(&endpoint)]).await;

    let (code, ready) = hub.get("/readyz").await;
    assert_eq!(code, 200);
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["sources"]["opennebula"][0]["connected"], false);

    let started = Instant::now();
    assert_eq!(hub.shutdown().await, Stopped::Drained);
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn without_sources_readyz_is_unchanged() {
    let hub = TestHub::start().await;
    let (code, ready) = hub.get("/readyz").await;
    assert_eq!(code, 200);
    assert_eq!(ready, json!({"clients": 0, "status": "ready"}));
}
