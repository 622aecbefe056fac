//! Event sources the hub subscribes to itself and publishes from, like any publisher: today
//! OpenNebula's Hook Manager (`[[sources.opennebula]]`, see `docs/opennebula.md`).
//!
//! [`Sources`] is built with the rest of the state, started when the server starts serving
//! and stopped with it: each source watches the shutdown token and ends when it is cancelled
//! (or when the hub refuses events because it is shutting down).

pub mod config;
pub mod opennebula;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::config::SourceSettings;
use self::opennebula::config::OpenNebulaSource;
use crate::hub::Hub;

/// The configured sources, their live counters, and their threads.
#[derive(Clone, Default)]
pub struct Sources {
    opennebula: Arc<[(OpenNebulaSource, Arc<opennebula::Stats>)]>,
    started: Arc<AtomicBool>,
    running: TaskTracker,
}

impl Sources {
    pub fn new(settings: &SourceSettings) -> Self {
        Self {
            opennebula: settings
                .opennebula
                .iter()
                .map(|s| (s.clone(), Arc::default()))
                .collect(),
            ..Self::default()
        }
    }

    pub fn is_empty(&self) -> bool {
        self.opennebula.is_empty()
    }

    /// Starts every source (once; later calls do nothing).
    pub fn start(&self, hub: &Arc<Hub>, shutdown: &CancellationToken) {
        if self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        for (index, (settings, stats)) in self.opennebula.iter().enumerate() {
            opennebula::spawn(
                index,
                settings.clone(),
                Arc::clone(hub),
                Arc::clone(stats),
                shutdown.clone(),
                self.running.token(),
            );
        }
    }

    /// Each source's state and counters, for `/readyz`:
    /// `{"opennebula": [{"connected": true, "received": 12, …}]}`.
    pub fn status(&self) -> Value {
        let opennebula: Vec<Value> = self
            .opennebula
            .iter()
            .map(|(_, stats)| stats.snapshot())
            .collect();
        json!({ "opennebula": opennebula })
    }

    /// Resolves when every source has stopped (after the shutdown token was cancelled).
    pub async fn stopped(&self) {
        self.running.close();
        self.running.wait().await;
    }
}
