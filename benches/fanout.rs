//! `fanout`: the load generator and benchmark of events-hub's WebSocket fan-out.
//!
//! It runs the real `events-hub` binary (the one Cargo built for this profile) as a child
//! process, opens N authenticated subscribers, each from its own source address in
//! 127.0.0.0/8, publishes through `POST /v1/events`, checks that every subscriber received
//! every event in order with no duplicate, and reports handshakes/s, deliveries/s, latency
//! (HDR histogram) and RSS per connection, as medians of `--runs` runs. Every scenario also runs
//! against the baseline — a minimal single-threaded server that frames each batch once and
//! writes the bytes straight to every socket — and every figure is shown next to the baseline's
//! with their ratio.
//!
//!   cargo bench --bench fanout                       every scenario (scripts/bench.sh)
//!   cargo bench --bench fanout -- latency memory     some scenarios
//!   cargo bench --bench fanout -- --smoke            a few seconds, asserts zero loss (CI)
//!   cargo bench --bench fanout -- --help
//!
//! See docs/benchmarks.md for the method and the figures.

#[path = "fanout/baseline.rs"]
mod baseline;
#[path = "fanout/deploy.rs"]
mod deploy;
#[path = "fanout/load.rs"]
mod load;
#[path = "fanout/redis.rs"]
mod redis;
#[path = "fanout/target.rs"]
mod target;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::Parser;
use events_hub::auth::{self, TokenSpec};
use events_hub::config::{EVENTS_PUBLISH, READ_ONLY};
use hdrhistogram::Histogram;
use jsonwebtoken::{Algorithm, EncodingKey};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use deploy::{Deployment, Setup, Under};
use load::{ClosedLoop, OpenLoop, Shared, Verdict};
use redis::{Redis, RedisCounters};
use target::Kind;

const SCENARIOS: &[&str] = &[
    "latency",
    "latency-batch",
    "sustained",
    "throughput-1k",
    "throughput-10k",
    "memory",
    "handshakes",
    "filter-1k",
    "cluster-fanout",
    "cluster-throughput",
    "cluster-events",
    "cluster-batch",
    "cluster-memory",
];

#[derive(Parser, Debug)]
#[command(
    name = "fanout",
    about = "Fan-out benchmark of events-hub against the machine's own limit (the baseline)",
    after_help = "Scenarios: latency, latency-batch, sustained, throughput-1k, throughput-10k, \
                  memory, handshakes, filter-1k (each subscriber filters on its own vm_id; hub only), \
                  cluster-fanout, cluster-throughput, cluster-events, cluster-batch, cluster-memory (the hub alone, then 1 and 3 \
                  nodes on one redis-server), all (the default). Options override the chosen scenarios' \
                  parameters."
)]
struct Args {
    /// Scenarios to run (default: all).
    scenarios: Vec<String>,
    /// Runs per scenario and server; the tables show medians.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Servers to measure: hub, baseline or both (the ratio needs both).
    #[arg(long, default_value = "both", value_parser = ["hub", "baseline", "both"])]
    server: String,
    /// Measure the baseline server only (same as --server baseline).
    #[arg(long)]
    baseline: bool,
    /// The CI smoke run: 200 subscribers, a few seconds, asserts zero loss.
    #[arg(long)]
    smoke: bool,
    /// Subscribers (sockets).
    #[arg(long)]
    subscribers: Option<usize>,
    /// Open loop: requests per second.
    #[arg(long)]
    rate: Option<f64>,
    /// Events per request.
    #[arg(long)]
    batch: Option<usize>,
    /// Publishing time in seconds.
    #[arg(long)]
    duration: Option<f64>,
    /// Publisher lanes (HTTP connections, one request in flight each).
    #[arg(long)]
    publishers: Option<usize>,
    /// Closed loop: events in flight per subscriber (0 = unlimited).
    #[arg(long)]
    window: Option<u64>,
    /// Concurrent handshakes while connecting subscribers.
    #[arg(long)]
    connectors: Option<usize>,
    /// Handshakes scenario: how many handshakes.
    #[arg(long)]
    handshakes: Option<usize>,
    /// Before each run, wait up to this many seconds for the machine to be quiet (other
    /// processes using < 15 % of a core); the bench shares 2 cores with whatever else runs.
    #[arg(long, default_value_t = 20.0)]
    quiet_wait: f64,
    /// Repeat a run disturbed by other processes (> 20 % of a core) up to this many times; the
    /// disturbed run is printed but left out of the medians.
    #[arg(long, default_value_t = 2)]
    retries: usize,
    /// Where the servers' stderr goes.
    #[arg(long, default_value = "target/bench-logs")]
    log_dir: PathBuf,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Debug, Clone, Copy)]
enum Load {
    Open(OpenLoop),
    Closed(ClosedLoop),
    /// Connect, wait for every welcome, measure RSS.
    Idle,
    Handshakes {
        total: usize,
        concurrency: usize,
    },
}

#[derive(Debug, Clone)]
struct Scenario {
    name: String,
    subscribers: usize,
    connectors: usize,
    load: Load,
    /// Hub settings (environment) this scenario needs.
    env: Vec<(String, String)>,
    /// Server-side filters: each subscriber filters on its own `vm_id` out of this many
    /// (0: no filters). The baseline server has none, so such a scenario measures the hub only.
    groups: usize,
    /// Measured against the hub alone and against clusters of 1 and 3 nodes on one Redis,
    /// each node with its share of the subscribers and publisher lanes (issue 14).
    cluster: bool,
}

impl Scenario {
    fn title(&self) -> String {
        let n = self.subscribers;
        match self.load {
            Load::Open(o) if self.groups > 0 => format!(
                "{n} subscribers × {} events/s, each subscriber filtering on one of {} vm_ids, open loop, {} s",
                o.rate,
                self.groups,
                o.duration.as_secs_f64()
            ),
            Load::Open(o) if o.batch == 1 => format!(
                "{n} subscribers × {} single events/s, open loop, {} s",
                o.rate,
                o.duration.as_secs_f64()
            ),
            Load::Open(o) => format!(
                "{n} subscribers × {} events/s as {} batches/s of {}, open loop, {} s",
                o.rate * o.batch as f64,
                o.rate,
                o.batch,
                o.duration.as_secs_f64()
            ),
            Load::Closed(c) => format!(
                "{n} subscribers, batches of {} as fast as accepted, {} publishers, window {} events, {} s",
                c.batch,
                c.lanes,
                c.window,
                c.duration.as_secs_f64()
            ),
            Load::Idle => format!("{n} idle subscribed connections"),
            Load::Handshakes { total, concurrency } => format!(
                "{total} authenticated handshakes, {concurrency} concurrent connectors, each from its own address"
            ),
        }
    }
}

/// A hub setting, passed only when this build of the hub knows it (its config rejects
/// unknown keys).
fn hub_setting(section: &str, key: &str, value: &str) -> Option<(String, String)> {
    let mut in_section = false;
    for line in events_hub::config::DEFAULT_TOML.lines() {
        let line = line.trim();
        if line.starts_with('[') && !line.starts_with("[[") {
            in_section = line == format!("[{section}]");
        } else if in_section && line.starts_with(&format!("{key} =")) {
            return Some((
                format!(
                    "EVENTS_HUB__{}__{}",
                    section.to_uppercase(),
                    key.to_uppercase()
                ),
                value.to_owned(),
            ));
        }
    }
    None
}

fn connection_env(sockets: usize) -> Vec<(String, String)> {
    // Room for every socket of the scenario when the hub caps its connections.
    hub_setting(
        "admission",
        "max_connections",
        &(sockets + 1000).max(10_000).to_string(),
    )
    .into_iter()
    .collect()
}

fn scenario(name: &str, args: &Args) -> Option<Scenario> {
    let open = |rate: f64, batch: usize, secs: f64| {
        Load::Open(OpenLoop {
            rate,
            batch,
            duration: Duration::from_secs_f64(secs),
            lanes: 4,
        })
    };
    let closed = |secs: f64, window: u64| {
        Load::Closed(ClosedLoop {
            batch: 20,
            lanes: 2,
            duration: Duration::from_secs_f64(secs),
            window,
        })
    };
    let (subscribers, load) = match name {
        "latency" => (100, open(200.0, 1, 20.0)),
        "latency-batch" => (100, open(10.0, 20, 20.0)),
        "sustained" => (1_000, open(200.0, 1, 15.0)),
        // Issue 15's filter cost: 1,000 sockets, each filtering on its own vm_id (`sustained`
        // is the unfiltered 1,000-socket case; the same rate unfiltered would exceed this machine).
        "filter-1k" => (1_000, open(1_000.0, 1, 10.0)),
        "throughput-1k" => (1_000, closed(10.0, 200)),
        "throughput-10k" => (10_000, closed(10.0, 100)),
        "memory" => (15_000, Load::Idle),
        "handshakes" => (
            0,
            Load::Handshakes {
                total: 10_000,
                concurrency: 64,
            },
        ),
        "smoke-single" => (200, open(200.0, 1, 2.0)),
        "smoke-batch" => (200, closed(1.0, 200)),
        "smoke-filter" => (200, open(200.0, 1, 2.0)),
        // Issue 14: the same fan-out through a cluster; what one event costs Redis, single and
        // batched.
        "cluster-fanout" => (999, open(200.0, 1, 15.0)),
        "cluster-throughput" => (999, closed(10.0, 200)),
        "cluster-events" => (30, open(2_000.0, 1, 10.0)),
        "cluster-batch" => (30, open(200.0, 20, 10.0)),
        "cluster-memory" => (15_000, Load::Idle),
        "smoke-cluster" => (201, open(200.0, 1, 2.0)),
        _ => return None,
    };
    let mut s = Scenario {
        name: name.to_owned(),
        subscribers: args.subscribers.unwrap_or(subscribers),
        connectors: args.connectors.unwrap_or(64),
        load,
        env: Vec::new(),
        groups: match name {
            "filter-1k" => 1_000,
            "smoke-filter" => 20,
            _ => 0,
        },
        cluster: name.contains("cluster"),
    };
    if let Load::Handshakes { total, concurrency } = &mut s.load {
        *total = args.handshakes.unwrap_or(*total);
        *concurrency = args.connectors.unwrap_or(*concurrency);
        s.subscribers = 0;
    }
    match &mut s.load {
        Load::Open(o) => {
            o.rate = args.rate.unwrap_or(o.rate);
            o.batch = args.batch.unwrap_or(o.batch);
            o.lanes = args.publishers.unwrap_or(o.lanes);
            if let Some(d) = args.duration {
                o.duration = Duration::from_secs_f64(d);
            }
        }
        Load::Closed(c) => {
            c.batch = args.batch.unwrap_or(c.batch);
            c.lanes = args.publishers.unwrap_or(c.lanes);
            c.window = args.window.unwrap_or(c.window);
            if let Some(d) = args.duration {
                c.duration = Duration::from_secs_f64(d);
            }
        }
        Load::Idle | Load::Handshakes { .. } => {}
    }
    let sockets = match s.load {
        Load::Handshakes { total, .. } => total,
        _ => s.subscribers,
    };
    s.env = connection_env(sockets);
    Some(s)
}

/// One run of one scenario against one server.
#[derive(Debug, Default)]
struct RunResult {
    /// (metric, value), in display order.
    metrics: Vec<(&'static str, f64)>,
    failures: Vec<String>,
    notes: Vec<String>,
}

impl RunResult {
    fn put(&mut self, name: &'static str, value: f64) {
        self.metrics.push((name, value));
    }

    fn get(&self, name: &str) -> Option<f64> {
        self.metrics.iter().find(|(n, _)| *n == name).map(|m| m.1)
    }
}

struct Tokens {
    reader: Arc<str>,
    publisher: String,
}

fn mint_tokens(secret: &str) -> Tokens {
    let key = EncodingKey::from_secret(secret.as_bytes());
    let mint = |subject: &str, claim: &str| {
        let spec = TokenSpec {
            subject: subject.into(),
            claims: vec![claim.into()],
            ttl_secs: 24 * 3600,
            ..TokenSpec::default()
        };
        auth::mint_token(Algorithm::HS256, &key, &spec).expect("token")
    };
    Tokens {
        reader: mint("bench-subscriber", READ_ONLY).into(),
        publisher: mint("bench-publisher", EVENTS_PUBLISH),
    }
}

/// CPU used by the servers, by Redis (cluster runs), by this generator and by everything else
/// on the machine between two points, in % of one core (the machine has 200 %).
struct CpuMeter {
    server_pids: Vec<u32>,
    redis_pid: Option<u32>,
    server0: u64,
    redis0: u64,
    self0: u64,
    machine0: (u64, u64),
    wall0: Instant,
}

/// What the CPU measurement of a run says.
#[derive(Debug, Clone, Copy, Default)]
struct CpuUse {
    server_secs: f64,
    redis_secs: f64,
    generator_secs: f64,
}

fn pid_ticks(pid: u32) -> u64 {
    target::cpu_ticks(&format!("/proc/{pid}/stat")).unwrap_or(0)
}

impl CpuMeter {
    fn start(under: &Under) -> CpuMeter {
        let server_pids = under.server_pids.clone();
        let redis_pid = under.redis.map(Redis::pid);
        CpuMeter {
            server0: server_pids.iter().map(|&p| pid_ticks(p)).sum(),
            redis0: redis_pid.map_or(0, pid_ticks),
            server_pids,
            redis_pid,
            self0: target::cpu_ticks("/proc/self/stat").unwrap_or(0),
            machine0: target::machine_ticks().unwrap_or((0, 0)),
            wall0: Instant::now(),
        }
    }

    fn stop(&self, r: &mut RunResult) -> CpuUse {
        let wall = self.wall0.elapsed().as_secs_f64().max(1e-6);
        let hz = target::ticks_per_sec();
        let server = self
            .server_pids
            .iter()
            .map(|&p| pid_ticks(p))
            .sum::<u64>()
            .saturating_sub(self.server0);
        let redis = self
            .redis_pid
            .map_or(0, pid_ticks)
            .saturating_sub(self.redis0);
        let me = target::cpu_ticks("/proc/self/stat")
            .unwrap_or(0)
            .saturating_sub(self.self0);
        let (busy1, steal1) = target::machine_ticks().unwrap_or((0, 0));
        let busy = busy1.saturating_sub(self.machine0.0);
        let steal = steal1.saturating_sub(self.machine0.1);
        let pct = |ticks: u64| 100.0 * ticks as f64 / hz / wall;
        r.put("server CPU (% of 1 core)", pct(server));
        if self.redis_pid.is_some() {
            r.put("Redis CPU (% of 1 core)", pct(redis));
        }
        r.put("generator CPU (% of 1 core)", pct(me));
        let others = pct(busy.saturating_sub(server + redis + me));
        r.put("other processes CPU (% of 1 core)", others);
        if others > 20.0 {
            r.notes.push(format!(
                "other processes used {others:.0} % of a core during this run: its figures are disturbed"
            ));
        }
        if steal > 0 {
            r.put("steal (% of 1 core)", pct(steal));
        }
        CpuUse {
            server_secs: server as f64 / hz,
            redis_secs: redis as f64 / hz,
            generator_secs: me as f64 / hz,
        }
    }
}

/// Redis's cost per published event: CPU, bytes in (publish scripts, reads) and out (pub/sub
/// messages to every node, replies), commands; and its memory after the run.
fn put_redis_costs(
    r: &mut RunResult,
    redis: &Redis,
    counters: Option<(RedisCounters, RedisCounters)>,
    used: CpuUse,
    events: u64,
) {
    let per_event = |v: f64| v / events.max(1) as f64;
    r.put(
        "Redis CPU µs per published event",
        per_event(used.redis_secs * 1e6),
    );
    if let Some((before, after)) = counters {
        let diff = |f: fn(&RedisCounters) -> u64| f(&after).saturating_sub(f(&before)) as f64;
        r.put("Redis bytes in per event", per_event(diff(|c| c.net_in)));
        r.put("Redis bytes out per event", per_event(diff(|c| c.net_out)));
        r.put("Redis commands per event", per_event(diff(|c| c.commands)));
    }
    if let Some(bytes) = redis.used_memory() {
        r.put("Redis used memory after (MiB)", bytes as f64 / 1_048_576.0);
    }
}

/// What idle sockets cost Redis (heartbeats, audience reports, lease and registry refreshes,
/// the pub/sub probe), measured over 10 s.
async fn put_idle_redis_cost(r: &mut RunResult, under: &Under<'_>, sockets: usize) {
    const WINDOW: Duration = Duration::from_secs(10);
    let cpu = CpuMeter::start(under);
    tokio::time::sleep(WINDOW).await;
    let mut scratch = RunResult::default();
    let used = cpu.stop(&mut scratch);
    r.put(
        "Redis CPU idle (% of 1 core)",
        100.0 * used.redis_secs / WINDOW.as_secs_f64(),
    );
    r.put(
        "Redis CPU ns per idle socket per s",
        used.redis_secs * 1e9 / (sockets.max(1) as f64 * WINDOW.as_secs_f64()),
    );
}

fn put_latency(r: &mut RunResult, h: &Histogram<u64>) {
    if h.is_empty() {
        return;
    }
    r.put("latency p50 (µs)", h.value_at_quantile(0.50) as f64);
    r.put("latency p99 (µs)", h.value_at_quantile(0.99) as f64);
    r.put("latency p99.9 (µs)", h.value_at_quantile(0.999) as f64);
    r.put("latency max (µs)", h.max() as f64);
}

/// Runs the load of `sc` against a started server.
async fn run_load(sc: &Scenario, under: &Under<'_>, tokens: &Tokens) -> RunResult {
    let mut r = RunResult::default();
    if let Load::Handshakes { total, concurrency } = sc.load {
        let cpu = CpuMeter::start(under);
        let h = load::hammer_handshakes(
            under.nodes[0],
            Arc::clone(&tokens.reader),
            total,
            concurrency,
        )
        .await;
        let used = cpu.stop(&mut r);
        r.put("handshakes/s", h.ok as f64 / h.secs.max(1e-6));
        r.put(
            "server CPU µs per handshake",
            used.server_secs * 1e6 / h.ok.max(1) as f64,
        );
        r.put("handshakes ok", h.ok as f64);
        if let Some(l) = &h.latency
            && !l.is_empty()
        {
            r.put("handshake p50 (µs)", l.value_at_quantile(0.5) as f64);
            r.put("handshake p99 (µs)", l.value_at_quantile(0.99) as f64);
        }
        for (e, n) in h.failures {
            r.failures.push(format!("{n}× handshake failed: {e}"));
        }
        return r;
    }

    let lanes = match sc.load {
        Load::Open(o) => o.lanes,
        Load::Closed(c) => c.lanes,
        _ => 1,
    };
    let shared = Shared::with_groups(lanes, sc.groups);
    let stop = CancellationToken::new();
    let permits = Arc::new(Semaphore::new(sc.connectors.max(1)));
    let rss_before = under.rss_kib();
    let redis_memory_before = under.redis.and_then(Redis::used_memory);
    let connect_started = Instant::now();
    let handles: Vec<_> = (0..sc.subscribers)
        .map(|i| {
            tokio::spawn(load::subscriber(
                i,
                under.nodes[i % under.nodes.len()],
                Arc::clone(&tokens.reader),
                Arc::clone(&shared),
                Arc::clone(&permits),
                stop.clone(),
            ))
        })
        .collect();
    let connect_deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let done = shared.ready.load(Ordering::Relaxed) + shared.failed.load(Ordering::Relaxed);
        if done >= sc.subscribers || Instant::now() > connect_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let connect_secs = connect_started.elapsed().as_secs_f64();
    let ready = shared.ready.load(Ordering::Relaxed);
    r.put("subscribers connected", ready as f64);
    r.put(
        "handshakes/s while connecting",
        ready as f64 / connect_secs.max(1e-6),
    );

    let mut published = load::Published::default();
    match sc.load {
        Load::Idle => {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let rss_after = under.rss_kib();
            r.put("server RSS before (MiB)", rss_before as f64 / 1024.0);
            r.put("server RSS with sockets (MiB)", rss_after as f64 / 1024.0);
            r.put(
                "RSS per connection (KiB)",
                rss_after.saturating_sub(rss_before) as f64 / ready.max(1) as f64,
            );
            if let Some((before, after)) =
                redis_memory_before.zip(under.redis.and_then(Redis::used_memory))
            {
                r.put(
                    "Redis memory per connection (bytes)",
                    after.saturating_sub(before) as f64 / ready.max(1) as f64,
                );
            }
            if under.redis.is_some() {
                put_idle_redis_cost(&mut r, under, ready).await;
            }
            published.per_lane = vec![0; lanes];
        }
        Load::Open(_) | Load::Closed(_) => {
            let cpu = CpuMeter::start(under);
            let redis0 = under.redis.and_then(Redis::counters);
            let publisher = match sc.load {
                Load::Open(plan) => load::publish_open_loop(
                    plan,
                    under.nodes.clone(),
                    tokens.publisher.clone(),
                    ready,
                    Arc::clone(&shared),
                ),
                Load::Closed(plan) => load::publish_closed_loop(
                    plan,
                    under.nodes.clone(),
                    tokens.publisher.clone(),
                    ready,
                    Arc::clone(&shared),
                ),
                _ => unreachable!(),
            };
            published = tokio::task::spawn_blocking(move || publisher.join())
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default();
            // Drain: wait until every subscriber has every event, or nothing moves for 5 s.
            let expected = match sc.groups {
                0 => published.events() * ready as u64,
                // Each event reaches the subscribers of its one vm_id.
                groups => published.events() * ready as u64 / groups as u64,
            };
            let mut last_count = shared.delivered.load(Ordering::Relaxed);
            let mut last_move = Instant::now();
            let drain_deadline = Instant::now() + Duration::from_secs(120);
            loop {
                let now_count = shared.delivered.load(Ordering::Relaxed);
                if now_count >= expected || Instant::now() > drain_deadline {
                    break;
                }
                if now_count != last_count {
                    last_count = now_count;
                    last_move = Instant::now();
                } else if last_move.elapsed() > Duration::from_secs(5) {
                    break;
                }
                tokio::time::sleep(Duration::from_micros(500)).await;
            }
            let end_ns = shared.now_ns();
            let used = cpu.stop(&mut r);
            let redis1 = under.redis.and_then(Redis::counters);
            let rss_after = under.rss_kib();
            r.put(
                "RSS per subscriber, loaded (KiB)",
                rss_after.saturating_sub(rss_before) as f64 / ready.max(1) as f64,
            );
            let delivered = shared.delivered.load(Ordering::Relaxed);
            r.put(
                "server CPU ns per delivery",
                used.server_secs * 1e9 / delivered.max(1) as f64,
            );
            r.put(
                "server CPU µs per published event",
                used.server_secs * 1e6 / published.events().max(1) as f64,
            );
            if let Some(redis) = under.redis {
                put_redis_costs(&mut r, redis, redis0.zip(redis1), used, published.events());
                r.put(
                    "servers + Redis CPU ns per delivery",
                    (used.server_secs + used.redis_secs) * 1e9 / delivered.max(1) as f64,
                );
            }
            r.put(
                "generator CPU ns per delivery",
                used.generator_secs * 1e9 / delivered.max(1) as f64,
            );
            let window_secs = (end_ns.saturating_sub(published.first_ns)) as f64 / 1e9;
            if let Load::Open(plan) = sc.load {
                let audience = match sc.groups {
                    0 => ready as f64,
                    groups => ready as f64 / groups as f64,
                };
                r.put(
                    "offered deliveries/s",
                    plan.rate * plan.batch as f64 * audience,
                );
            }
            r.put("deliveries/s", delivered as f64 / window_secs.max(1e-6));
            r.put("events published", published.events() as f64);
            let publish_secs = (published.last_ns.saturating_sub(published.first_ns)) as f64 / 1e9;
            if let Load::Closed(_) = sc.load {
                r.put(
                    "events accepted/s",
                    published.events() as f64 / publish_secs.max(1e-6),
                );
            }
            r.put(
                "drain after last publish (ms)",
                end_ns.saturating_sub(published.last_ns) as f64 / 1e6,
            );
            put_latency(&mut r, &shared.latency());
            if let Some(lag) = &published.dispatch_lag
                && !lag.is_empty()
            {
                r.put("schedule lag p99 (µs)", lag.value_at_quantile(0.99) as f64);
                r.put("schedule lag max (µs)", lag.max() as f64);
            }
            if matches!(sc.load, Load::Open(_)) && published.timer_priority != "SCHED_FIFO" {
                r.notes.push(format!(
                    "the schedule thread runs at {} priority (SCHED_FIFO not allowed)",
                    published.timer_priority
                ));
            }
            if published.recipient_mismatches > 0 {
                r.notes.push(format!(
                    "{} publish replies named fewer recipients than events × subscribers",
                    published.recipient_mismatches
                ));
            }
            for (e, n) in &published.errors {
                r.failures.push(format!("{n}× publish failed: {e}"));
            }
        }
        Load::Handshakes { .. } => unreachable!(),
    }

    stop.cancel();
    let mut outcomes = Vec::with_capacity(handles.len());
    for h in handles {
        if let Ok(o) = h.await {
            outcomes.push(o);
        }
    }
    let verdict = Verdict::tally(&outcomes, &published.per_lane);
    drop(outcomes);
    r.put("lost", verdict.lost as f64);
    r.put("reordered", verdict.reordered as f64);
    r.put("duplicated", verdict.duplicates as f64);
    if !verdict.clean() {
        r.failures.push(verdict.summary());
    }
    if verdict.other_frames > 0 {
        r.notes.push(format!(
            "{} non-bench frames received",
            verdict.other_frames
        ));
    }
    r
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    let n = values.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn fmt(v: f64) -> String {
    if v.is_nan() {
        "-".into()
    } else if v.abs() >= 1000.0 {
        // Thousands separated by commas.
        let s = format!("{:.0}", v.abs());
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        if v < 0.0 { format!("-{out}") } else { out }
    } else if v.fract() == 0.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// The medians of each metric over the runs of one server.
fn medians(runs: &[RunResult]) -> Vec<(&'static str, f64)> {
    let Some(first) = runs.first() else {
        return Vec::new();
    };
    first
        .metrics
        .iter()
        .map(|(name, _)| {
            let mut values: Vec<f64> = runs.iter().filter_map(|r| r.get(name)).collect();
            (*name, median(&mut values))
        })
        .collect()
}

fn lookup(m: &[(&'static str, f64)], name: &str) -> Option<f64> {
    m.iter().find(|(n, _)| *n == name).map(|x| x.1)
}

/// One column per setup (in `order`), then each other column's ratio to `reference`.
fn print_table(
    sc: &Scenario,
    results: &BTreeMap<&'static str, Vec<RunResult>>,
    order: &[&'static str],
    reference: &'static str,
    runs: usize,
) {
    let columns: Vec<(&str, Vec<(&'static str, f64)>)> = order
        .iter()
        .map(|&name| {
            (
                name,
                medians(results.get(name).map(Vec::as_slice).unwrap_or(&[])),
            )
        })
        .collect();
    let base = columns
        .iter()
        .find(|c| c.0 == reference)
        .map(|c| c.1.clone())
        .unwrap_or_default();
    let others: Vec<&str> = order.iter().copied().filter(|&n| n != reference).collect();
    println!();
    println!("== {}: {}", sc.name, sc.title());
    println!("   medians of {runs} run(s) per server");
    let mut header = format!("   {:<36}", "metric");
    for (name, _) in &columns {
        header += &format!(" {name:>14}");
    }
    for name in &others {
        header += &format!(" {:>13}", format!("{name}/{reference}"));
    }
    println!("{header}");
    // Every metric any column has, in the order of the column that has most.
    let mut by_size: Vec<&Vec<(&'static str, f64)>> = columns.iter().map(|c| &c.1).collect();
    by_size.sort_by_key(|m| std::cmp::Reverse(m.len()));
    let mut names: Vec<&'static str> = Vec::new();
    for (name, _) in by_size.into_iter().flatten() {
        if !names.contains(name) {
            names.push(name);
        }
    }
    for metric in names {
        let mut line = format!("   {metric:<36}");
        for (_, m) in &columns {
            line += &format!(" {:>14}", fmt(lookup(m, metric).unwrap_or(f64::NAN)));
        }
        let b = lookup(&base, metric).unwrap_or(f64::NAN);
        for name in &others {
            let m = &columns.iter().find(|c| c.0 == *name).map(|c| &c.1);
            let v = m.and_then(|m| lookup(m, metric)).unwrap_or(f64::NAN);
            let ratio = if v.is_nan() || b.is_nan() || b == 0.0 {
                "-".to_owned()
            } else {
                format!("{:.2}", v / b)
            };
            line += &format!(" {ratio:>13}");
        }
        println!("{line}");
    }
    print_targets(sc, &columns);
}

fn print_targets(sc: &Scenario, columns: &[(&str, Vec<(&'static str, f64)>)]) {
    let column = |name: &str| {
        columns
            .iter()
            .find(|c| c.0 == name)
            .map(|c| c.1.clone())
            .unwrap_or_default()
    };
    if sc.cluster {
        for (name, m) in columns.iter().filter(|c| !c.1.is_empty()) {
            let clean = ["lost", "reordered", "duplicated"]
                .iter()
                .all(|n| lookup(m, n) == Some(0.0));
            println!("   target: zero loss ({name}): {}", verdict(clean));
        }
        return;
    }
    // The issue sets its latency targets for single events; batches are shown against them
    // for information only.
    let label = if sc.name == "latency-batch" {
        "same bar, informational"
    } else {
        "target"
    };
    for line in targets(sc, &column("hub"), &column("baseline")) {
        println!("   {label}: {line}");
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok { "MET" } else { "NOT MET" }
}

/// The targets for this scenario, judged on the medians.
fn targets(
    sc: &Scenario,
    hub: &[(&'static str, f64)],
    base: &[(&'static str, f64)],
) -> Vec<String> {
    let h = |n: &str| lookup(hub, n);
    let b = |n: &str| lookup(base, n);
    let zero_loss = || {
        ["lost", "reordered", "duplicated"]
            .iter()
            .all(|n| h(n) == Some(0.0))
    };
    let mut out = Vec::new();
    if hub.is_empty() {
        return out;
    }
    match sc.name.as_str() {
        "latency" | "latency-batch" => {
            if let Some(p50) = h("latency p50 (µs)") {
                out.push(format!(
                    "p50 ≤ 1 ms: {} ({})",
                    verdict(p50 <= 1000.0),
                    fmt(p50)
                ));
            }
            if let (Some(hp), Some(bp)) = (h("latency p99 (µs)"), b("latency p99 (µs)")) {
                out.push(format!(
                    "p99 ≤ 1.5 × baseline p99: {} ({} vs {}, {:.2}×)",
                    verdict(hp <= 1.5 * bp),
                    fmt(hp),
                    fmt(bp),
                    hp / bp
                ));
            }
            out.push(format!("zero loss: {}", verdict(zero_loss())));
        }
        "sustained" => {
            if let (Some(d), Some(o)) = (h("deliveries/s"), h("offered deliveries/s")) {
                out.push(format!(
                    "keeps up with the offered rate (≥ 99 %): {} ({:.1} %)",
                    verdict(d >= 0.99 * o),
                    100.0 * d / o
                ));
            }
            out.push(format!("zero loss: {}", verdict(zero_loss())));
        }
        "throughput-1k" | "throughput-10k" => {
            if let (Some(hd), Some(bd)) = (h("deliveries/s"), b("deliveries/s")) {
                out.push(format!(
                    "deliveries/s ≥ 0.8 × baseline: {} ({:.2}×)",
                    verdict(hd >= 0.8 * bd),
                    hd / bd
                ));
            }
            out.push(format!("zero loss: {}", verdict(zero_loss())));
        }
        "memory" => {
            if let Some(k) = h("RSS per connection (KiB)") {
                out.push(format!(
                    "≤ 8 KiB RSS per idle subscribed connection: {} ({:.2} KiB at {} sockets)",
                    verdict(k <= 8.0),
                    k,
                    fmt(h("subscribers connected").unwrap_or(0.0))
                ));
            }
        }
        "handshakes" => {
            if let Some(rate) = h("handshakes/s") {
                let ceiling = b("handshakes/s")
                    .map(|c| format!("; generator ceiling (baseline) {}/s", fmt(c)))
                    .unwrap_or_default();
                out.push(format!(
                    "≥ 5,000 authenticated handshakes/s: {} ({}/s{ceiling})",
                    verdict(rate >= 5000.0),
                    fmt(rate)
                ));
            }
        }
        _ => {}
    }
    out
}

fn machine_summary() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "?".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_owned();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let profile = if cfg!(debug_assertions) {
        "debug (not for figures)"
    } else {
        "release"
    };
    format!("{cores} cores, {cpu}, Linux {kernel}, {profile} build")
}

/// Waits (at most `max_secs`) until the machine is quiet; returns the load seen last, in % of
/// one core, while this process is idle.
fn wait_for_quiet(max_secs: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs_f64(max_secs);
    let hz = target::ticks_per_sec();
    loop {
        let (busy0, _) = target::machine_ticks().unwrap_or((0, 0));
        let self0 = target::cpu_ticks("/proc/self/stat").unwrap_or(0);
        std::thread::sleep(Duration::from_millis(500));
        let (busy1, _) = target::machine_ticks().unwrap_or((0, 0));
        let self1 = target::cpu_ticks("/proc/self/stat").unwrap_or(0);
        let others = busy1
            .saturating_sub(busy0)
            .saturating_sub(self1.saturating_sub(self0));
        let load = 100.0 * others as f64 / hz / 0.5;
        if load < 15.0 || Instant::now() >= deadline {
            return load;
        }
    }
}

/// The columns of a scenario: the cluster scenarios compare the hub alone with 1 and 3 nodes
/// (the smoke run: 3 nodes only); the others the chosen servers (a filtered scenario: the hub
/// only, as the baseline has no filters and would send every subscriber everything).
fn setups_for(sc: &Scenario, kinds: &[Kind], smoke: bool) -> Vec<Setup> {
    if sc.cluster && smoke {
        return vec![Setup::Cluster(3)];
    }
    if sc.cluster {
        return vec![
            Setup::Single(Kind::Hub),
            Setup::Cluster(1),
            Setup::Cluster(3),
        ];
    }
    kinds
        .iter()
        .filter(|k| sc.groups == 0 || **k == Kind::Hub)
        .map(|&k| Setup::Single(k))
        .collect()
}

/// One run: start the setup, run the load, stop it, and say how it ended. Servers are started
/// and stopped from this (main) thread: the kernel kills them if it ends (PR_SET_PDEATHSIG).
fn measure(
    setup: Setup,
    sc: &Scenario,
    args: &Args,
    secret: &str,
    tokens: &Tokens,
    runtime: &tokio::runtime::Runtime,
    label: &str,
) -> RunResult {
    let what = match setup {
        Setup::Single(kind) => kind.name().to_owned(),
        Setup::Cluster(_) => format!("hub node of {}", setup.name()),
    };
    let mut deployment = match Deployment::start(setup, secret, &sc.env, &args.log_dir, label) {
        Ok(d) => d,
        Err(e) => {
            return RunResult {
                failures: vec![e],
                ..RunResult::default()
            };
        }
    };
    std::thread::sleep(Duration::from_millis(200));
    let mut result = runtime.block_on(async {
        match deployment.under().ready().await {
            Ok(()) => run_load(sc, &deployment.under(), tokens).await,
            Err(e) => RunResult {
                failures: vec![e],
                ..RunResult::default()
            },
        }
    });
    // Let the generator's sockets close before the servers are stopped.
    std::thread::sleep(Duration::from_millis(200));
    if !deployment.alive() {
        result
            .failures
            .push(format!("the {what} died during the run"));
    }
    let (failures, notes) = deployment.stop(&what, &args.log_dir, label);
    result.failures.extend(failures);
    result.notes.extend(notes);
    result
}

fn print_run(run: usize, key: &str, result: &RunResult) {
    let line: Vec<String> = result
        .metrics
        .iter()
        .map(|(n, v)| format!("{n}={}", fmt(*v)))
        .collect();
    let status = if result.failures.is_empty() {
        "ok"
    } else {
        "FAILED"
    };
    println!("   run {run} {key:<8} {status}: {}", line.join(", "));
    for f in &result.failures {
        println!("      failure: {f}");
    }
    for n in &result.notes {
        println!("      note: {n}");
    }
}

fn main() -> ExitCode {
    // reqwest's TLS has no crypto provider of its own (Cargo.toml): the process default, ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    if std::env::args().nth(1).as_deref() == Some("serve-baseline") {
        return baseline::serve();
    }
    let args = Args::parse();
    let nofile = target::raise_nofile_limit();

    let mut names: Vec<String> = if args.smoke {
        vec![
            "smoke-single".into(),
            "smoke-batch".into(),
            "smoke-filter".into(),
            "smoke-cluster".into(),
        ]
    } else if args.scenarios.is_empty() || args.scenarios.iter().any(|s| s == "all") {
        SCENARIOS.iter().map(|s| (*s).to_owned()).collect()
    } else {
        args.scenarios.clone()
    };
    names.dedup();
    let mut scenarios = Vec::new();
    for name in &names {
        match scenario(name, &args) {
            Some(s) => scenarios.push(s),
            None => {
                eprintln!(
                    "fanout: unknown scenario {name:?}; known: {}, all",
                    SCENARIOS.join(", ")
                );
                return ExitCode::from(2);
            }
        }
    }
    let kinds: Vec<Kind> = match (args.baseline, args.server.as_str()) {
        (true, _) | (_, "baseline") => vec![Kind::Baseline],
        (_, "hub") => vec![Kind::Hub],
        _ => vec![Kind::Hub, Kind::Baseline],
    };
    let runs = if args.smoke { 1 } else { args.runs.max(1) };
    let retries = if args.smoke { 0 } else { args.retries };
    if args.smoke
        && let Err(e) = load::self_check()
    {
        println!("fanout: the verifier's self-check failed: {e}");
        println!("smoke: 0 passed, 1 failed");
        return ExitCode::from(1);
    }
    for sc in &scenarios {
        let sockets = match sc.load {
            Load::Handshakes { total, .. } => total,
            _ => sc.subscribers,
        };
        if sockets as u64 + 200 > nofile {
            eprintln!(
                "fanout: {} needs {sockets} sockets but this process may open {nofile} files; \
                 lower --subscribers/--handshakes or raise the hard limit (ulimit -Hn)",
                sc.name
            );
            return ExitCode::from(2);
        }
    }

    println!("fanout: {}", machine_summary());
    println!(
        "fanout: hub binary {}; open-files limit {nofile}; {runs} run(s) per scenario and server",
        env!("CARGO_BIN_EXE_events-hub")
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("generator runtime");
    let secret = events_hub::protocol::new_id();
    let tokens = mint_tokens(&secret);
    let started = Instant::now();
    let mut failed_runs = 0usize;

    for sc in &scenarios {
        println!();
        println!("-- {}: {}", sc.name, sc.title());
        let setups = setups_for(sc, &kinds, args.smoke);
        let mut results: BTreeMap<&'static str, Vec<RunResult>> = BTreeMap::new();
        for run in 1..=runs {
            for &setup in &setups {
                for attempt in 0..=retries {
                    let key = setup.name();
                    let label = format!("{}-{}-run{run}-{attempt}", sc.name, key.replace(' ', "-"));
                    let background = if args.smoke || args.quiet_wait <= 0.0 {
                        0.0
                    } else {
                        wait_for_quiet(args.quiet_wait)
                    };
                    let mut result = measure(setup, sc, &args, &secret, &tokens, &runtime, &label);
                    if background >= 15.0 {
                        result.notes.push(format!(
                            "the machine was not quiet before this run ({background:.0} % of a core busy after waiting {} s)",
                            args.quiet_wait
                        ));
                    }
                    print_run(run, key, &result);
                    let disturbed = background >= 15.0
                        || result
                            .get("other processes CPU (% of 1 core)")
                            .is_some_and(|v| v > 20.0);
                    if disturbed && result.failures.is_empty() && attempt < retries {
                        println!("      (disturbed by other processes: not counted, repeated)");
                        continue;
                    }
                    if !result.failures.is_empty() {
                        failed_runs += 1;
                    }
                    results.entry(key).or_default().push(result);
                    break;
                }
            }
        }
        let order: Vec<&'static str> = setups.iter().map(|s| s.name()).collect();
        let reference = if sc.cluster { "hub" } else { "baseline" };
        print_table(sc, &results, &order, reference, runs);
    }

    println!();
    println!(
        "fanout: {} scenario(s) in {:.0} s; {failed_runs} failed run(s)",
        scenarios.len(),
        started.elapsed().as_secs_f64()
    );
    runtime.shutdown_timeout(Duration::from_secs(2));
    if args.smoke {
        if failed_runs == 0 {
            println!("smoke: 1 passed, 0 failed");
        } else {
            println!("smoke: 0 passed, 1 failed");
        }
    }
    if failed_runs == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
