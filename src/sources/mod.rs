//! Event sources the hub subscribes to itself and publishes from, like any publisher: today
//! OpenNebula's Hook Manager (`[[sources.opennebula]]`, see `docs/opennebula.md`) and the
//! built-in demo fleet (`[sources.demo]`, `serve --demo`).
//!
//! A source implements [`Source`]: it reports its status for `/readyz` and, once started with
//! a [`SourceContext`] (the [`Publisher`], the shutdown token), runs until shutdown. Each
//! source's settings and code live in its own folder, behind a cargo feature. [`Sources`] is
//! built with the rest of the state, started when the server starts serving and stopped with
//! it.

pub mod alertmanager;
pub mod config;
pub mod demo;
pub mod opennebula;

use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tokio_util::task::task_tracker::TaskTrackerToken;

use self::config::SourceSettings;
use crate::config::error::ConfigError;
use crate::publisher::Publisher;

/// An event source of the hub's own.
pub trait Source: Send + 'static {
    /// The name `/readyz` groups it under (`opennebula`).
    fn kind(&self) -> &'static str;
    /// Its live state and counters, readable while it runs.
    fn status(&self) -> Arc<dyn SourceStatus>;
    /// Starts it on a thread or task of its own. It runs until `ctx.shutdown` is cancelled (or
    /// publishing closes) and holds `ctx.running` until it has stopped.
    fn start(self: Box<Self>, ctx: SourceContext);
}

/// What `/readyz` shows for one source.
pub trait SourceStatus: Send + Sync {
    fn snapshot(&self) -> Value;
}

/// What a started source gets.
pub struct SourceContext {
    /// Its position among the sources of its kind, for logs.
    pub index: usize,
    pub publisher: Publisher,
    pub shutdown: CancellationToken,
    /// Held until the source has stopped, so shutdown can wait for it.
    pub running: TaskTrackerToken,
}

/// The configured sources, their live status, and their threads.
#[derive(Clone, Default)]
pub struct Sources {
    /// Taken by the first [`Sources::start`].
    pending: Arc<Mutex<Vec<Box<dyn Source>>>>,
    statuses: Arc<[(&'static str, Arc<dyn SourceStatus>)]>,
    running: TaskTracker,
}

impl Sources {
    pub fn new(settings: &SourceSettings) -> Result<Self, ConfigError> {
        let sources = configured(settings)?;
        Ok(Self {
            statuses: sources.iter().map(|s| (s.kind(), s.status())).collect(),
            pending: Arc::new(Mutex::new(sources)),
            running: TaskTracker::new(),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.statuses.is_empty()
    }

    /// Starts every source (once; later calls do nothing).
    pub fn start(&self, publisher: &Publisher, shutdown: &CancellationToken) {
        let pending = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        let mut started: Vec<&'static str> = Vec::new();
        for source in pending {
            let kind = source.kind();
            let index = started.iter().filter(|k| **k == kind).count();
            started.push(kind);
            source.start(SourceContext {
                index,
                publisher: publisher.clone(),
                shutdown: shutdown.clone(),
                running: self.running.token(),
            });
        }
    }

    /// Each source's state and counters by kind, in configuration order, for `/readyz`:
    /// `{"opennebula": [{"connected": true, "received": 12, …}]}`.
    pub fn status(&self) -> Value {
        let mut by_kind = Map::new();
        for (kind, status) in self.statuses.iter() {
            let list = by_kind
                .entry(*kind)
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(list) = list {
                list.push(status.snapshot());
            }
        }
        Value::Object(by_kind)
    }

    /// Resolves when every source has stopped (after the shutdown token was cancelled).
    pub async fn stopped(&self) {
        self.running.close();
        self.running.wait().await;
    }
}

/// The sources `[sources]` configures, in order: the OpenNebula blocks, then the demo.
fn configured(settings: &SourceSettings) -> Result<Vec<Box<dyn Source>>, ConfigError> {
    let mut sources = opennebula_sources(settings)?;
    if settings.demo.enabled {
        sources.push(Box::new(demo::Demo::new(settings.demo.clone())));
    }
    Ok(sources)
}

#[cfg(feature = "opennebula")]
fn opennebula_sources(settings: &SourceSettings) -> Result<Vec<Box<dyn Source>>, ConfigError> {
    Ok(settings
        .opennebula
        .iter()
        .map(|block| Box::new(opennebula::OpenNebula::new(block.clone())) as Box<dyn Source>)
        .collect())
}

/// Without the `opennebula` feature, an `[[sources.opennebula]]` block is an error.
#[cfg(not(feature = "opennebula"))]
fn opennebula_sources(settings: &SourceSettings) -> Result<Vec<Box<dyn Source>>, ConfigError> {
    if settings.opennebula.is_empty() {
        return Ok(Vec::new());
    }
    Err(ConfigError::new(
        "sources.opennebula",
        "this events-hub was built without OpenNebula support; build it with the default \
         features (cargo feature `opennebula`)",
    ))
}
