//! The simulated fleet: VMs walk the lifecycle the seed guides show (stopped → starting →
//! running → stopping/suspending → …) on hosts whose health now and then degrades. Pure state
//! and randomness, no I/O, so the source only has to publish what a step returns.

use serde_json::{Value, json};

/// Which configured channel an event goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    Vm,
    Host,
}

/// One event a step produces.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    pub lane: Lane,
    pub message: &'static str,
    pub body: Value,
}

/// Every VM state the simulation uses, and where each goes next (the second only sometimes).
const STATES: [(&str, &str, Option<&str>); 7] = [
    ("stopped", "starting", None),
    ("starting", "running", None),
    ("running", "stopping", Some("suspending")),
    ("stopping", "stopped", None),
    ("suspending", "suspended", None),
    ("suspended", "resuming", None),
    ("resuming", "running", None),
];

const HEALTH: [&str; 3] = ["healthy", "degraded", "unhealthy"];

struct Vm {
    id: String,
    host: usize,
    /// Index into [`STATES`].
    state: usize,
}

struct Host {
    id: String,
    /// Index into [`HEALTH`].
    health: usize,
}

pub struct Fleet {
    vms: Vec<Vm>,
    hosts: Vec<Host>,
    steps: u64,
}

impl Fleet {
    /// `vms` and `hosts` are at least 1 (validated).
    pub fn new(vms: usize, hosts: usize) -> Self {
        let hosts: Vec<Host> = (0..hosts.max(1))
            .map(|_| Host {
                id: crate::protocol::new_id(),
                health: 0,
            })
            .collect();
        let vms = (0..vms.max(1))
            .map(|i| Vm {
                id: uuid::Uuid::new_v4().to_string(),
                host: i % hosts.len(),
                state: rand::random_range(0..STATES.len()),
            })
            .collect();
        Self {
            vms,
            hosts,
            steps: 0,
        }
    }

    /// One step: a VM changes state (`VM_STATE_CHANGED`, and `HOST_VM_STATE_CHANGED` as its
    /// host reports it), and every fourth step a host reports its health.
    pub fn step(&mut self) -> Vec<Planned> {
        self.steps += 1;
        let mut events = Vec::with_capacity(3);
        let index = rand::random_range(0..self.vms.len());
        if let Some(vm) = self.vms.get_mut(index) {
            let (previous, next, alternative) = STATES[vm.state % STATES.len()];
            let current = match alternative {
                Some(other) if rand::random_bool(0.3) => other,
                _ => next,
            };
            vm.state = STATES
                .iter()
                .position(|(name, _, _)| *name == current)
                .unwrap_or(0);
            let change = json!({
                "previous_state": previous,
                "current_state": current,
                "vm_id": vm.id,
            });
            let host = self
                .hosts
                .get(vm.host)
                .map(|h| h.id.clone())
                .unwrap_or_default();
            events.push(Planned {
                lane: Lane::Vm,
                message: "VM_STATE_CHANGED",
                body: change.clone(),
            });
            events.push(Planned {
                lane: Lane::Host,
                message: "HOST_VM_STATE_CHANGED",
                body: json!({ "host_id": host, "event": change }),
            });
        }
        if self.steps % 4 == 1 {
            let index = rand::random_range(0..self.hosts.len());
            if let Some(host) = self.hosts.get_mut(index) {
                // Mostly healthy; a degraded host recovers or gets worse, then recovers.
                host.health = match host.health {
                    0 if rand::random_bool(0.2) => 1,
                    1 if rand::random_bool(0.3) => 2,
                    _ => 0,
                };
                events.push(Planned {
                    lane: Lane::Host,
                    message: "HOST_HEALTH_UPDATE",
                    body: json!({ "host_id": host.id, "state": HEALTH[host.health] }),
                });
            }
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vms_follow_the_lifecycle_and_hosts_report_health() {
        let mut fleet = Fleet::new(3, 2);
        let mut last: std::collections::HashMap<String, String> = Default::default();
        let mut health = 0;
        for _ in 0..200 {
            for event in fleet.step() {
                match event.message {
                    "VM_STATE_CHANGED" => {
                        assert_eq!(event.lane, Lane::Vm);
                        let vm = event.body["vm_id"].as_str().expect("vm_id").to_owned();
                        let previous = event.body["previous_state"].as_str().expect("prev");
                        let current = event.body["current_state"].as_str().expect("current");
                        if let Some(known) = last.get(&vm) {
                            assert_eq!(known, previous, "each change starts where the last ended");
                        }
                        let allowed = STATES.iter().find(|(s, _, _)| *s == previous);
                        let (_, next, alt) = allowed.expect("a known state");
                        assert!(
                            current == *next || Some(current) == *alt,
                            "{previous}->{current}"
                        );
                        last.insert(vm, current.to_owned());
                    }
                    "HOST_VM_STATE_CHANGED" => {
                        assert_eq!(event.lane, Lane::Host);
                        assert_eq!(event.body["host_id"].as_str().map(str::len), Some(64));
                        assert!(event.body["event"]["vm_id"].is_string());
                    }
                    "HOST_HEALTH_UPDATE" => {
                        health += 1;
                        assert!(HEALTH.contains(&event.body["state"].as_str().expect("state")));
                    }
                    other => panic!("unexpected {other}"),
                }
            }
        }
        assert_eq!(health, 50);
        assert!(last.len() <= 3);
    }
}
