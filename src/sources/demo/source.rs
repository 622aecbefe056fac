//! The demo source as the hub starts it: a task on the runtime that steps the fleet every
//! `interval_ms` and publishes through the `Publisher`, until shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::MissedTickBehavior;

use super::config::DemoSettings;
use super::fleet::{Fleet, Lane};
use crate::broker::{Event, PublishError};
use crate::sources::{Source, SourceContext, SourceStatus};

pub struct Demo {
    settings: DemoSettings,
    stats: Arc<Stats>,
}

impl Demo {
    pub fn new(settings: DemoSettings) -> Self {
        Self {
            settings,
            stats: Arc::default(),
        }
    }
}

/// What `/readyz` shows: `{"running": true, "published": 42, "interval_ms": 400}`.
#[derive(Debug, Default)]
struct Stats {
    running: AtomicBool,
    published: AtomicU64,
    interval_ms: AtomicU64,
}

impl SourceStatus for Stats {
    fn snapshot(&self) -> Value {
        json!({
            "running": self.running.load(Ordering::Relaxed),
            "published": self.published.load(Ordering::Relaxed),
            "interval_ms": self.interval_ms.load(Ordering::Relaxed),
        })
    }
}

impl Source for Demo {
    fn kind(&self) -> &'static str {
        "demo"
    }

    fn status(&self) -> Arc<dyn SourceStatus> {
        Arc::clone(&self.stats) as Arc<dyn SourceStatus>
    }

    fn start(self: Box<Self>, ctx: SourceContext) {
        let settings = self.settings;
        let (Some(vm), Some(host)) = (
            ctx.publisher.channel(&settings.vm_channel),
            ctx.publisher.channel(&settings.host_channel),
        ) else {
            // Validated at start-up; kept as a message rather than a panic.
            tracing::error!("demo source not started: unknown channel");
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::error!("demo source not started: no async runtime");
            return;
        };
        let stats = self.stats;
        stats
            .interval_ms
            .store(settings.interval_ms, Ordering::Relaxed);
        runtime.spawn(async move {
            let _running = ctx.running;
            let mut fleet = Fleet::new(
                usize::try_from(settings.vms).unwrap_or(1),
                usize::try_from(settings.hosts).unwrap_or(1),
            );
            let mut ticks = tokio::time::interval(Duration::from_millis(settings.interval_ms));
            ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
            stats.running.store(true, Ordering::Relaxed);
            tracing::info!(
                vm_channel = %settings.vm_channel,
                host_channel = %settings.host_channel,
                interval_ms = settings.interval_ms,
                "demo source started"
            );
            loop {
                tokio::select! {
                    () = ctx.shutdown.cancelled() => break,
                    _ = ticks.tick() => {}
                }
                let events: Vec<Event> = fleet
                    .step()
                    .into_iter()
                    .map(|planned| Event {
                        channel: match planned.lane {
                            Lane::Vm => vm,
                            Lane::Host => host,
                        },
                        message: planned.message.to_owned(),
                        body: serde_json::value::to_raw_value(&planned.body).ok(),
                        target: None,
                        origin: None,
                    })
                    .collect();
                match ctx.publisher.publish(events).await {
                    Ok(receipt) => {
                        stats
                            .published
                            .fetch_add(receipt.ids.len() as u64, Ordering::Relaxed);
                    }
                    Err(PublishError::ShuttingDown) => break,
                    Err(error) => tracing::warn!(%error, "demo source: publish failed"),
                }
            }
            stats.running.store(false, Ordering::Relaxed);
            tracing::info!("demo source stopped");
        });
    }
}
