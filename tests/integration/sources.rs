//! `[[sources.opennebula]]` in-process: a libzmq PUB socket plays the Hook Manager, a hub
//! started as the binary starts it publishes what the bridge maps, and shutdown stops the
//! bridge. (The end-to-end test, tests/e2e/test_opennebula.py, does the same with pyzmq and
//! the built binary.)

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use events_hub::config::OpenNebulaSettings;
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

fn source(endpoint: &str) -> OpenNebulaSettings {
    OpenNebulaSettings {
        reconnect_min_ms: 20,
        reconnect_max_ms: 200,
        ..OpenNebulaSettings::with_endpoint(endpoint)
    }
}

fn status(hub: &TestHub) -> Value {
    hub.state.sources.status()["opennebula"][0].clone()
}

/// `HookStateVM::format_message` (OpenNebula/one `src/hm/HookStateVM.cc`), abridged `<VM>`.
fn vm_document(id: u64, state: &str, lcm_state: &str) -> String {
    format!(
        "<HOOK_MESSAGE><HOOK_TYPE>STATE</HOOK_TYPE><HOOK_OBJECT>VM</HOOK_OBJECT>\
         <STATE>{state}</STATE><LCM_STATE>{lcm_state}</LCM_STATE><RESOURCE_ID>{id}</RESOURCE_ID>\
         <REMOTE_HOST>node-2</REMOTE_HOST><VM><ID>{id}</ID><UID>0</UID><GID>0</GID>\
         <UNAME>oneadmin</UNAME><GNAME>oneadmin</GNAME><NAME>cache</NAME></VM></HOOK_MESSAGE>"
    )
}

/// The keys `src/hm_mad/one_hm.rb` (`key`) publishes one VM state change under, in order.
fn vm_keys(id: u64, state: &str, lcm_state: &str) -> [String; 2] {
    [
        format!("EVENT VM {id}/{state}/{lcm_state} "),
        format!("EVENT STATE VM/{state}/{lcm_state}/{id} "),
    ]
}

#[tokio::test]
async fn hook_manager_events_reach_subscribers_and_shutdown_stops_the_bridge() {
    let one = HookManager::bind();
    let endpoint = one.endpoint.clone();
    let mut hub = TestHub::start_with(|s| s.sources.opennebula = vec![source(&endpoint)]).await;
    let (mut ws, _) = hub.subscribe(ip(1), "sre", "orchestrator").await;

    // Slow joiner: send a message the bridge skips until it has seen one (each probe another
    // image, so none is a copy of the one before).
    let mut probe = 0;
    eventually("the bridge to subscribe", || {
        probe += 1;
        one.send(
            &format!("EVENT IMAGE {probe}/READY/ "),
            &format!(
                "<HOOK_MESSAGE><HOOK_TYPE>STATE</HOOK_TYPE><HOOK_OBJECT>IMAGE</HOOK_OBJECT>\
                      <RESOURCE_ID>{probe}</RESOURCE_ID></HOOK_MESSAGE>"
            ),
        );
        status(&hub)["skipped"].as_u64() > Some(0)
    })
    .await;
    assert_eq!(status(&hub)["connected"], true);

    // Each change goes out under both keys, as one_hm.rb sends it: one event each.
    for (state, lcm) in [("ACTIVE", "RUNNING"), ("POWEROFF", "LCM_INIT")] {
        for key in vm_keys(9, state, lcm) {
            one.send(&key, &vm_document(9, state, lcm));
        }
    }
    let frame = next_json(&mut ws).await;
    assert_eq!(frame["event_type"], "orchestrator");
    assert_eq!(frame["message"], "VM_STATE_CHANGED");
    assert_eq!(
        frame["body"],
        json!({"source": "opennebula", "vm_id": 9, "name": "cache", "current_state": "running",
               "state": "ACTIVE", "lcm_state": "RUNNING", "host": "node-2"})
    );
    let next = next_json(&mut ws).await;
    assert_eq!(next["body"]["current_state"], "poweroff");
    assert_eq!(next["body"]["previous_state"], "running");
    assert_eq!(next["seq"].as_u64(), frame["seq"].as_u64().map(|s| s + 1));

    // The bridge counts an event once Publisher::publish returns, which can be just after the
    // subscriber has it.
    eventually("the events to be counted", || {
        status(&hub)["published"] == 2
    })
    .await;
    let (code, ready) = hub.get("/readyz").await;
    assert_eq!(code, 200);
    let counted = &ready["sources"]["opennebula"][0];
    assert_eq!(counted["published"], 2);
    assert_eq!(counted["skipped_by"]["copies"], 2);
    assert_eq!(counted["malformed"]["unknown_key"], 0);

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
