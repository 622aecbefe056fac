//! Soak: up to 30 minutes of churning subscribers and steady publishing against the real hub.
//!
//! - steady subscribers stay connected the whole run and must receive every event, in order;
//! - churning subscribers connect, stay a random 0.2-5 s and leave: 60 % with a clean close,
//!   20 % with a TCP reset, 20 % by going silent until the hub's heartbeat closes them; while
//!   connected, each must see a gap-free, duplicate-free run of sequence numbers;
//! - every `--sample-secs` it prints the hub's RSS, live clients and churn cycles.
//!
//! The run fails (exit 1) on any loss, reorder or duplicate for a connected client, or when the
//! hub's RSS grows by more than 10 % between the first and the second half of the run.
//!
//! `cargo bench --bench soak -- --minutes 30` (or `scripts/soak.sh`). Loopback only; bounded.

#[path = "fanout/load.rs"]
#[allow(dead_code)]
mod load;
#[path = "fanout/target.rs"]
#[allow(dead_code)]
mod target;

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use events_hub::auth::{self, TokenSpec};
use events_hub::config::{EVENTS_PUBLISH, READ_ONLY};
use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::{Algorithm, EncodingKey};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(about = "Soak the hub: churn and steady publishing, loss and RSS over time")]
struct Args {
    /// Length of the run, at most 30.
    #[arg(long, default_value_t = 30.0)]
    minutes: f64,
    /// Events published per second (single events, open loop).
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// Subscribers connected for the whole run.
    #[arg(long, default_value_t = 50)]
    steady: usize,
    /// Churning subscribers at any moment.
    #[arg(long, default_value_t = 100)]
    churners: usize,
    #[arg(long, default_value_t = 10)]
    sample_secs: u64,
    #[arg(long, default_value = "target/soak-logs")]
    log_dir: std::path::PathBuf,
    /// Accepted (and ignored) so that `cargo bench` can pass its own flag.
    #[arg(long, hide = true)]
    bench: bool,
}

/// What the churning subscribers saw, all together.
#[derive(Default)]
struct Churn {
    cycles: AtomicU64,
    gaps: AtomicU64,
    duplicates: AtomicU64,
    unexpected_closes: AtomicU64,
    connect_failures: AtomicU64,
    events: AtomicU64,
}

fn main() -> ExitCode {
    // reqwest's TLS has no crypto provider of its own (Cargo.toml): the process default, ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    if !(0.0..=30.0).contains(&args.minutes) {
        eprintln!("soak: --minutes must be between 0 and 30");
        return ExitCode::from(2);
    }
    target::raise_nofile_limit();
    let secret = events_hub::protocol::new_id();
    let env: Vec<(String, String)> = [
        ("EVENTS_HUB__HEARTBEAT__PING_INTERVAL_SECS", "2"),
        ("EVENTS_HUB__HEARTBEAT__IDLE_TIMEOUT_SECS", "6"),
        ("EVENTS_HUB__ADMISSION__MAX_CONNECTIONS", "15000"),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .to_vec();
    let server =
        match target::Server::start(target::Kind::Hub, &secret, &env, &args.log_dir, "soak") {
            Ok(server) => server,
            Err(e) => {
                eprintln!("soak: {e}");
                return ExitCode::from(1);
            }
        };
    let mint = |subject: &str, claim: &str| {
        let spec = TokenSpec {
            subject: subject.into(),
            claims: vec![claim.into()],
            ttl_secs: 3 * 3600,
            ..TokenSpec::default()
        };
        auth::mint_token(
            Algorithm::HS256,
            &EncodingKey::from_secret(secret.as_bytes()),
            &spec,
        )
        .expect("token")
    };
    let reader: Arc<str> = mint("soak-subscriber", READ_ONLY).into();
    let publisher = mint("soak-publisher", EVENTS_PUBLISH);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let ok = runtime.block_on(soak(&args, &server, reader, publisher));
    let stopped = server.stop(Duration::from_secs(15));
    println!("hub exit: {:?}", stopped.status);
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

async fn soak(args: &Args, server: &target::Server, reader: Arc<str>, publisher: String) -> bool {
    let endpoints = server.endpoints;
    let duration = Duration::from_secs_f64(args.minutes * 60.0);
    let shared = load::Shared::with_groups(1, 0);
    let stop = CancellationToken::new();
    let permits = Arc::new(Semaphore::new(64));

    // Steady subscribers first, all connected before the first event.
    let steady: Vec<_> = (0..args.steady)
        .map(|i| {
            tokio::spawn(load::subscriber(
                i,
                endpoints,
                reader.clone(),
                shared.clone(),
                permits.clone(),
                stop.clone(),
            ))
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while shared.ready.load(Ordering::Relaxed) + shared.failed.load(Ordering::Relaxed) < args.steady
    {
        if Instant::now() > deadline {
            eprintln!("soak: steady subscribers did not connect");
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let plan = load::OpenLoop {
        rate: args.rate,
        batch: 1,
        duration,
        lanes: 1,
    };
    let started = Instant::now();
    let publishing = load::publish_open_loop(
        plan,
        vec![endpoints],
        publisher,
        args.steady,
        shared.clone(),
    );

    let churn = Arc::new(Churn::default());
    let churners: Vec<_> = (0..args.churners)
        .map(|i| {
            tokio::spawn(churner(
                i as u64,
                endpoints,
                reader.clone(),
                churn.clone(),
                stop.clone(),
            ))
        })
        .collect();

    // Sample RSS, live clients and churn until the publisher is done.
    let http = reqwest::Client::new();
    let mut samples: Vec<(u64, u64)> = Vec::new();
    println!(
        "{:>8} {:>10} {:>8} {:>10} {:>12}",
        "t (s)", "RSS (KiB)", "clients", "cycles", "delivered"
    );
    while !publishing.is_finished() {
        tokio::time::sleep(Duration::from_secs(args.sample_secs)).await;
        let rss = target::rss_kib(server.pid()).unwrap_or(0);
        let clients = match http
            .get(format!("http://{}/readyz", endpoints.http))
            .send()
            .await
        {
            Ok(r) => r
                .json::<serde_json::Value>()
                .await
                .ok()
                .and_then(|v| v["clients"].as_u64())
                .map_or_else(|| "?".to_owned(), |n| n.to_string()),
            Err(_) => "?".to_owned(),
        };
        let t = started.elapsed().as_secs();
        samples.push((t, rss));
        println!(
            "{t:>8} {rss:>10} {clients:>8} {:>10} {:>12}",
            churn.cycles.load(Ordering::Relaxed),
            shared.delivered.load(Ordering::Relaxed) + churn.events.load(Ordering::Relaxed)
        );
    }
    let published = tokio::task::spawn_blocking(move || publishing.join())
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    // Let the last events land on the steady subscribers, then stop everyone.
    let expected = published.events();
    let settle = Instant::now() + Duration::from_secs(10);
    while shared.delivered.load(Ordering::Relaxed) < expected * args.steady as u64
        && Instant::now() < settle
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    let mut outcomes = Vec::new();
    for s in steady {
        if let Ok(outcome) = s.await {
            outcomes.push(outcome);
        }
    }
    for c in churners {
        let _ = c.await;
    }

    let verdict = load::Verdict::tally(&outcomes, &published.per_lane);
    let half = samples.len() / 2;
    let max_rss = |s: &[(u64, u64)]| s.iter().map(|(_, r)| *r).max().unwrap_or(0);
    // The first sample is warm-up (allocator arenas, channel rings filling).
    let first_half = max_rss(samples.get(1..half).unwrap_or(&[]));
    let second_half = max_rss(samples.get(half..).unwrap_or(&[]));
    let growth = if first_half > 0 {
        second_half as f64 / first_half as f64 - 1.0
    } else {
        0.0
    };
    let churn_clean = churn.gaps.load(Ordering::Relaxed) == 0
        && churn.duplicates.load(Ordering::Relaxed) == 0
        && churn.unexpected_closes.load(Ordering::Relaxed) == 0;
    println!();
    println!(
        "published events:        {expected} ({} errors)",
        published.errors.values().sum::<u64>()
    );
    println!("steady subscribers:      {}", verdict.summary());
    println!(
        "churn:                   {} cycles, {} events seen, {} gaps, {} duplicates, {} unexpected closes, {} connect failures",
        churn.cycles.load(Ordering::Relaxed),
        churn.events.load(Ordering::Relaxed),
        churn.gaps.load(Ordering::Relaxed),
        churn.duplicates.load(Ordering::Relaxed),
        churn.unexpected_closes.load(Ordering::Relaxed),
        churn.connect_failures.load(Ordering::Relaxed),
    );
    println!(
        "hub RSS:                 max {first_half} KiB in the first half, {second_half} KiB in the second ({:+.1} %)",
        growth * 100.0
    );
    let flat = growth <= 0.10;
    let ok = verdict.clean() && churn_clean && flat && published.errors.is_empty();
    println!(
        "soak: {} (loss for connected clients: {}, RSS flat: {})",
        if ok { "PASSED" } else { "FAILED" },
        if verdict.clean() && churn_clean {
            "none"
        } else {
            "YES"
        },
        if flat { "yes" } else { "no" }
    );
    ok
}

/// One churning slot: connect, stay a while checking for gaps, leave one of three ways; again.
async fn churner(
    slot: u64,
    endpoints: target::Endpoints,
    token: Arc<str>,
    churn: Arc<Churn>,
    stop: CancellationToken,
) {
    let mut n = slot;
    while !stop.is_cancelled() {
        n += 7919; // a cheap spread of stay times and exit modes
        let stay = Duration::from_millis(200 + (n * 2_654_435_761) % 4_800);
        let mut ws = match load::open_subscriber(&endpoints, &token).await {
            Ok(ws) => ws,
            Err(_) => {
                churn.connect_failures.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let until = tokio::time::Instant::now() + stay;
        let mut last: Option<u64> = None;
        loop {
            let frame = tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep_until(until) => break,
                frame = ws.next() => frame,
            };
            match frame {
                Some(Ok(Message::Text(text))) => {
                    if let Some((_, seq, _)) = load::parse_event(text.as_str()) {
                        churn.events.fetch_add(1, Ordering::Relaxed);
                        match last {
                            Some(prev) if seq == prev + 1 => {}
                            Some(prev) if seq <= prev => {
                                churn.duplicates.fetch_add(1, Ordering::Relaxed);
                            }
                            Some(_) => {
                                churn.gaps.fetch_add(1, Ordering::Relaxed);
                            }
                            None => {}
                        }
                        last = Some(seq);
                    }
                }
                Some(Ok(_)) => {}
                // The hub never closes a client that reads and answers pings.
                _ => {
                    churn.unexpected_closes.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
        }
        match n % 5 {
            0 => {
                // Abrupt: TCP reset, no close frame.
                let _ = ws.get_ref().set_zero_linger();
                drop(ws);
            }
            1 => {
                // Silent: hold the socket without reading until the hub times it out.
                tokio::spawn(async move {
                    let _held = ws;
                    tokio::time::sleep(Duration::from_secs(8)).await;
                });
            }
            _ => {
                let _ = ws.send(Message::Close(None)).await;
                let _ = tokio::time::timeout(Duration::from_secs(5), async {
                    while let Some(Ok(_)) = ws.next().await {}
                })
                .await;
            }
        }
        churn.cycles.fetch_add(1, Ordering::Relaxed);
    }
}
