//! The load generator: subscribers that verify what they receive, open-loop and closed-loop
//! publishers, and the handshake hammer.
//!
//! The generator shares the machine's 2 cores with the server, so its per-frame work is kept
//! small: the sequence number and scheduled time are read from the end of the frame with a
//! substring search and a digit loop (no JSON parse), the order check is one comparison on the
//! fast path, and latency goes into one of a few sharded HDR histograms.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hdrhistogram::Histogram;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::sync::CancellationToken;

use crate::target::Endpoints;

/// The channel every subscriber joins and every event is published on.
pub const CHANNEL: &str = "pdfm";
/// Latency histograms: 1 µs to 10 min, 3 significant figures.
const HIST_MAX_US: u64 = 600_000_000;
const HIST_SHARDS: usize = 64;
const WELCOME_MESSAGE: &str = "WebSocket connection established subscribed to global by default";

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIST_MAX_US, 3).expect("valid histogram bounds")
}

/// Every socket of the process gets its own source address in 127.0.0.0/8, never 127.0.0.1
/// (the publisher's). 127.1.0.1 upwards: 254 × 256 × 254 addresses.
static NEXT_SOURCE: AtomicU64 = AtomicU64::new(0);

pub fn next_source() -> Ipv4Addr {
    let i = NEXT_SOURCE.fetch_add(1, Ordering::Relaxed);
    let a = 1 + (i / (256 * 254)) % 254;
    let b = (i / 254) % 256;
    let c = 1 + i % 254;
    Ipv4Addr::new(127, a as u8, b as u8, c as u8)
}

/// A TCP connection from `source` to `to`.
pub async fn connect_from(source: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((source, 0)))?;
    let stream = socket.connect(to).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

fn client_config() -> WebSocketConfig {
    // Small buffers: 15,000 clients with tungstenite's 128 KiB defaults would cost GiBs.
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
}

/// An authenticated WebSocket handshake from its own source address; returns the socket with
/// the welcome frame already read. Gives up after 30 s.
pub async fn open_subscriber(
    endpoints: &Endpoints,
    token: &str,
) -> Result<WebSocketStream<TcpStream>, String> {
    open_filtered(endpoints, token, None).await
}

/// A subscriber that asks for `body.vm_id == group` only, when `group` is given.
pub async fn open_filtered(
    endpoints: &Endpoints,
    token: &str,
    group: Option<usize>,
) -> Result<WebSocketStream<TcpStream>, String> {
    tokio::time::timeout(Duration::from_secs(30), handshake(endpoints, token, group))
        .await
        .unwrap_or_else(|_| Err("no welcome within 30 s".into()))
}

async fn handshake(
    endpoints: &Endpoints,
    token: &str,
    group: Option<usize>,
) -> Result<WebSocketStream<TcpStream>, String> {
    let stream = connect_from(next_source(), endpoints.ws)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let filter = group
        .map(|g| format!("&filter={CHANNEL}:body.vm_id%20%3D%3D%20{g}"))
        .unwrap_or_default();
    let mut request = format!(
        "ws://{}/v1/ws/subscribe?event_types={CHANNEL}{filter}",
        endpoints.ws
    )
    .into_client_request()
    .map_err(|e| format!("request: {e}"))?;
    request.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {token}")).map_err(|e| e.to_string())?,
    );
    let (mut ws, _) =
        tokio_tungstenite::client_async_with_config(request, stream, Some(client_config()))
            .await
            .map_err(|e| match e {
                tungstenite::Error::Http(response) => {
                    format!("handshake: HTTP {}", response.status().as_u16())
                }
                other => format!("handshake: {other}"),
            })?;
    match ws.next().await {
        Some(Ok(Message::Text(text))) if text.as_str().contains(WELCOME_MESSAGE) => Ok(ws),
        Some(Ok(other)) => Err(format!("first frame is not the welcome: {other:?}")),
        Some(Err(e)) => Err(format!("reading the welcome: {e}")),
        None => Err("closed before the welcome".into()),
    }
}

/// What all subscribers share.
pub struct Shared {
    /// Time zero: event times are nanoseconds since this instant.
    pub start: Instant,
    /// Subscribers that have their welcome.
    pub ready: AtomicUsize,
    /// Subscribers that gave up on their handshake.
    pub failed: AtomicUsize,
    /// Bench events received, all subscribers together.
    pub delivered: AtomicU64,
    hists: Vec<Mutex<Histogram<u64>>>,
    lanes: usize,
    /// Server-side filters: with `groups` > 0, subscriber `i` filters on `body.vm_id == i %
    /// groups` and the event with sequence `s` carries `vm_id` `s % groups`.
    pub groups: usize,
}

impl Shared {
    /// Counters for `lanes` publisher lanes; with `groups` > 0 each subscriber filters on its
    /// own `vm_id` out of `groups` (0: no filters).
    pub fn with_groups(lanes: usize, groups: usize) -> Arc<Shared> {
        Arc::new(Shared {
            start: Instant::now(),
            ready: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            delivered: AtomicU64::new(0),
            hists: (0..HIST_SHARDS)
                .map(|_| Mutex::new(new_histogram()))
                .collect(),
            lanes,
            groups,
        })
    }

    pub fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// All latencies recorded so far, in µs.
    pub fn latency(&self) -> Histogram<u64> {
        let mut all = new_histogram();
        for shard in &self.hists {
            let shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            let _ = all.add(&*shard);
        }
        all
    }
}

/// Order check of one publisher lane as one subscriber saw it.
#[derive(Debug, Default, Clone)]
pub struct LaneCheck {
    /// Next sequence number expected; everything below it was received.
    next: u64,
    /// Received ahead of a gap (only touched when something arrived out of order).
    ahead: BTreeSet<u64>,
    pub reordered: u64,
    pub duplicates: u64,
}

impl LaneCheck {
    #[inline]
    fn see(&mut self, seq: u64) {
        if seq == self.next {
            self.next += 1;
            while !self.ahead.is_empty() && self.ahead.remove(&self.next) {
                self.next += 1;
            }
        } else if seq < self.next || self.ahead.contains(&seq) {
            self.duplicates += 1;
        } else {
            self.ahead.insert(seq);
            self.reordered += 1;
        }
    }

    /// Distinct sequence numbers received.
    pub fn distinct(&self) -> u64 {
        self.next + self.ahead.len() as u64
    }
}

/// How a subscriber ended.
#[derive(Debug, Clone)]
pub enum End {
    /// Still connected when the run stopped it.
    Stopped,
    /// Never connected.
    ConnectFailed(String),
    /// The server closed the socket.
    Closed(String),
    /// The connection broke.
    Broken(String),
}

#[derive(Debug)]
pub struct SubOutcome {
    pub lanes: Vec<LaneCheck>,
    /// `(group, groups)` of a filtered subscriber: it must see exactly the sequence numbers
    /// `s` with `s % groups == group`, in order.
    pub group: Option<(u64, u64)>,
    pub other_frames: u64,
    pub end: End,
}

/// Reads `{"l":L,"s":S,"t":T` — lane, sequence number, scheduled time in ns — from a frame.
/// The publisher puts them first in `body`, and the envelope fields before `body` never contain
/// `{"l":`.
#[inline]
pub fn parse_event(text: &str) -> Option<(usize, u64, u64)> {
    const MARK: &str = "{\"l\":";
    let bytes = text.as_bytes();
    let mut i = text.find(MARK)? + MARK.len();
    let number = |i: &mut usize, expect: &[u8]| -> Option<u64> {
        let mut v: u64 = 0;
        let start = *i;
        while *i < bytes.len() && bytes[*i].is_ascii_digit() {
            v = v * 10 + u64::from(bytes[*i] - b'0');
            *i += 1;
        }
        if *i == start || !bytes[*i..].starts_with(expect) {
            return None;
        }
        *i += expect.len();
        Some(v)
    };
    let lane = number(&mut i, b",\"s\":")?;
    let seq = number(&mut i, b",\"t\":")?;
    let t = number(&mut i, b"")?;
    Some((lane as usize, seq, t))
}

/// One subscriber: connect (bounded by `connect_permits`), then verify every frame until `stop`.
pub async fn subscriber(
    index: usize,
    endpoints: Endpoints,
    token: Arc<str>,
    shared: Arc<Shared>,
    connect_permits: Arc<Semaphore>,
    stop: CancellationToken,
) -> SubOutcome {
    let group = (shared.groups > 0).then(|| (index % shared.groups) as u64);
    let mut outcome = SubOutcome {
        lanes: vec![LaneCheck::default(); shared.lanes],
        group: group.map(|g| (g, shared.groups as u64)),
        other_frames: 0,
        end: End::Stopped,
    };
    let connected = {
        let _permit = connect_permits.acquire().await;
        open_filtered(&endpoints, &token, group.map(|g| g as usize)).await
    };
    let mut ws = match connected {
        Ok(ws) => ws,
        Err(e) => {
            shared.failed.fetch_add(1, Ordering::Relaxed);
            outcome.end = End::ConnectFailed(e);
            return outcome;
        }
    };
    shared.ready.fetch_add(1, Ordering::Relaxed);
    let shard = &shared.hists[index % HIST_SHARDS];
    loop {
        let message = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            message = ws.next() => message,
        };
        match message {
            Some(Ok(Message::Text(text))) => {
                let Some((lane, seq, t)) = parse_event(text.as_str()) else {
                    outcome.other_frames += 1;
                    continue;
                };
                let now = shared.now_ns();
                let Some(check) = outcome.lanes.get_mut(lane) else {
                    outcome.other_frames += 1;
                    continue;
                };
                match outcome.group {
                    // Numbered within the group, so the lane check sees 0, 1, 2, …
                    Some((g, groups)) if seq % groups == g => check.see(seq / groups),
                    // Let through by mistake: a duplicate of nothing, counted as such.
                    Some(_) => check.duplicates += 1,
                    None => check.see(seq),
                }
                let micros = (now.saturating_sub(t) / 1000).max(1);
                shard
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .saturating_record(micros);
                shared.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Some(Ok(Message::Close(frame))) => {
                outcome.end = End::Closed(match frame {
                    Some(f) => format!("close {} {}", u16::from(f.code), f.reason.as_str()),
                    None => "close without code".into(),
                });
                break;
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                outcome.end = End::Broken(e.to_string());
                break;
            }
            None => {
                outcome.end = End::Broken("EOF without close frame".into());
                break;
            }
        }
    }
    outcome
}

/// Totals over all subscribers of a run.
#[derive(Debug, Default)]
pub struct Verdict {
    pub expected: u64,
    pub received: u64,
    pub lost: u64,
    pub reordered: u64,
    pub duplicates: u64,
    pub other_frames: u64,
    pub connect_failures: BTreeMap<String, u64>,
    pub ends: BTreeMap<String, u64>,
}

impl Verdict {
    pub fn clean(&self) -> bool {
        self.lost == 0
            && self.reordered == 0
            && self.duplicates == 0
            && self.connect_failures.is_empty()
            && self.ends.is_empty()
    }

    /// `published[lane]` events were accepted on each lane.
    pub fn tally(outcomes: &[SubOutcome], published: &[u64]) -> Verdict {
        let mut v = Verdict::default();
        for o in outcomes {
            if let End::ConnectFailed(e) = &o.end {
                *v.connect_failures.entry(e.clone()).or_default() += 1;
                continue;
            }
            for (lane, check) in o.lanes.iter().enumerate() {
                let all = published.get(lane).copied().unwrap_or(0);
                let want = match o.group {
                    Some((g, groups)) => all.saturating_sub(g).div_ceil(groups),
                    None => all,
                };
                v.expected += want;
                v.received += check.distinct() + check.duplicates;
                v.lost += want.saturating_sub(check.distinct());
                v.reordered += check.reordered;
                v.duplicates += check.duplicates;
            }
            v.other_frames += o.other_frames;
            match &o.end {
                End::Stopped | End::ConnectFailed(_) => {}
                End::Closed(why) | End::Broken(why) => *v.ends.entry(why.clone()).or_default() += 1,
            }
        }
        v
    }

    pub fn summary(&self) -> String {
        let mut s = format!(
            "lost {} reordered {} duplicated {} (of {} expected deliveries)",
            self.lost, self.reordered, self.duplicates, self.expected
        );
        for (why, n) in &self.connect_failures {
            s.push_str(&format!("; {n}× connect failed: {why}"));
        }
        for (why, n) in &self.ends {
            s.push_str(&format!("; {n}× ended early: {why}"));
        }
        s
    }
}

/// A publisher lane: one HTTP connection, one request in flight at a time, its own sequence.
/// Within a lane the server sees requests in sequence order, so every subscriber must too.
pub struct Lane {
    client: reqwest::Client,
    url: String,
    auth: String,
    pub batch: usize,
    pub index: usize,
    /// Events accepted (202) so far = the next sequence number.
    pub seq: u64,
    pub posts: u64,
    pub errors: BTreeMap<String, u64>,
    /// Requests whose `recipients` was not events × subscribers.
    pub recipient_mismatches: u64,
    /// Whether `recipients` must be exact (one node), or at most events × subscribers.
    recipients_exact: bool,
    subscribers: usize,
    /// Events carry `vm_id` = sequence % `groups` when > 0 (see [`Shared::groups`]).
    pub groups: usize,
}

impl Lane {
    /// Lane `index` publishes through node `index % nodes.len()`. A cluster's reply counts
    /// the other nodes' subscribers as they last reported them (docs/cluster.md): there only a
    /// count above the subscribers is a mismatch.
    fn on_node(
        index: usize,
        nodes: &[Endpoints],
        token: &str,
        batch: usize,
        subscribers: usize,
    ) -> Lane {
        let mut lane = Lane::new(
            index,
            &nodes[index % nodes.len()],
            token,
            batch,
            subscribers,
        );
        lane.recipients_exact = nodes.len() == 1;
        lane
    }

    pub fn new(
        index: usize,
        endpoints: &Endpoints,
        token: &str,
        batch: usize,
        subscribers: usize,
    ) -> Lane {
        let client = reqwest::Client::builder()
            .no_proxy()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(1)
            .timeout(Duration::from_secs(30))
            .build()
            .expect("HTTP client");
        Lane {
            client,
            url: format!("http://{}/v1/events", endpoints.http),
            auth: format!("Bearer {token}"),
            batch,
            index,
            seq: 0,
            posts: 0,
            errors: BTreeMap::new(),
            recipient_mismatches: 0,
            recipients_exact: true,
            subscribers,
            groups: 0,
        }
    }

    fn body(&self, scheduled_ns: u64) -> String {
        let event = |seq: u64| match self.groups as u64 {
            0 => format!(
                r#"{{"event_type":"{CHANNEL}","message":"BENCH","body":{{"l":{},"s":{seq},"t":{scheduled_ns}}}}}"#,
                self.index
            ),
            groups => format!(
                r#"{{"event_type":"{CHANNEL}","message":"BENCH","body":{{"l":{},"s":{seq},"t":{scheduled_ns},"vm_id":{}}}}}"#,
                self.index,
                seq % groups
            ),
        };
        if self.batch == 1 {
            return event(self.seq);
        }
        let mut body = String::with_capacity(self.batch * 96);
        body.push('[');
        for k in 0..self.batch as u64 {
            if k > 0 {
                body.push(',');
            }
            body.push_str(&event(self.seq + k));
        }
        body.push(']');
        body
    }

    /// Publishes one request (`batch` events) stamped with `scheduled_ns`; advances the
    /// sequence only when the server accepted it.
    pub async fn post(&mut self, scheduled_ns: u64) -> bool {
        let body = self.body(scheduled_ns);
        let response = self
            .client
            .post(&self.url)
            .header("authorization", &self.auth)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await;
        self.posts += 1;
        let response = match response {
            Ok(r) => r,
            Err(e) => {
                *self.errors.entry(format!("POST: {e}")).or_default() += 1;
                return false;
            }
        };
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        if status != 202 {
            let mut text = text;
            text.truncate(200);
            *self
                .errors
                .entry(format!("POST: HTTP {status} {text}"))
                .or_default() += 1;
            return false;
        }
        let recipients = text
            .split("\"recipients\":")
            .nth(1)
            .map(|r| r.trim_start())
            .map(|r| r.split(|c: char| !c.is_ascii_digit()).next().unwrap_or(""))
            .and_then(|r| r.parse::<usize>().ok());
        let expected = self.batch * self.subscribers;
        let fits = match recipients {
            Some(n) if self.recipients_exact => n == expected,
            Some(n) => n <= expected,
            None => false,
        };
        if !fits {
            self.recipient_mismatches += 1;
        }
        self.seq += self.batch as u64;
        true
    }
}

/// What the publishers did.
#[derive(Debug, Default)]
pub struct Published {
    /// Events accepted per lane.
    pub per_lane: Vec<u64>,
    pub posts: u64,
    pub errors: BTreeMap<String, u64>,
    pub recipient_mismatches: u64,
    /// ns since start of the first and last scheduled (or sent) request.
    pub first_ns: u64,
    pub last_ns: u64,
    /// How late the open-loop schedule fired (µs): the generator's own timer error.
    pub dispatch_lag: Option<Histogram<u64>>,
    /// Scheduling class of the schedule thread.
    pub timer_priority: &'static str,
}

impl Published {
    pub fn events(&self) -> u64 {
        self.per_lane.iter().sum()
    }

    fn absorb(&mut self, lanes: Vec<Lane>) {
        self.per_lane = lanes.iter().map(|l| l.seq).collect();
        for lane in lanes {
            self.posts += lane.posts;
            self.recipient_mismatches += lane.recipient_mismatches;
            for (e, n) in lane.errors {
                *self.errors.entry(e).or_default() += n;
            }
        }
    }
}

/// The open-loop schedule.
#[derive(Debug, Clone, Copy)]
pub struct OpenLoop {
    /// Requests per second.
    pub rate: f64,
    /// Events per request.
    pub batch: usize,
    pub duration: Duration,
    pub lanes: usize,
}

/// Runs the open-loop publisher: a dedicated OS thread fires at the scheduled instants (sleep to
/// ~100 µs before, then spin) and hands each request, with its scheduled time, to the lane with
/// the least work on a separate single-threaded runtime. A slow response delays neither the
/// schedule nor other lanes; queueing delay shows up as latency because every event carries
/// its scheduled time, not its send time.
pub fn publish_open_loop(
    plan: OpenLoop,
    nodes: Vec<Endpoints>,
    token: String,
    subscribers: usize,
    shared: Arc<Shared>,
) -> std::thread::JoinHandle<Published> {
    std::thread::Builder::new()
        .name("publisher".into())
        .spawn(move || {
            let groups = shared.groups;
            let count = (plan.rate * plan.duration.as_secs_f64()).round().max(1.0) as u64;
            let interval = Duration::from_secs_f64(1.0 / plan.rate);
            let loads: Arc<Vec<AtomicUsize>> =
                Arc::new((0..plan.lanes).map(|_| AtomicUsize::new(0)).collect());
            let mut senders = Vec::new();
            let mut receivers = Vec::new();
            for _ in 0..plan.lanes {
                let (tx, rx) = mpsc::unbounded_channel::<u64>();
                senders.push(tx);
                receivers.push(rx);
            }
            // The lanes run on their own single-threaded runtime, on their own thread, while
            // this thread keeps the schedule.
            let (done_tx, done_rx) = std::sync::mpsc::channel::<Vec<Lane>>();
            {
                let loads = Arc::clone(&loads);
                std::thread::spawn(move || {
                    // Publishers normally sit on other machines: keep this thread's requests
                    // from queueing behind the subscribers' work.
                    nice_this_thread(-10);
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("publisher runtime");
                    let lanes = runtime.block_on(async move {
                        let mut tasks = Vec::new();
                        for (index, mut rx) in receivers.into_iter().enumerate() {
                            let mut lane =
                                Lane::on_node(index, &nodes, &token, plan.batch, subscribers);
                            lane.groups = groups;
                            let loads = Arc::clone(&loads);
                            tasks.push(tokio::spawn(async move {
                                while let Some(scheduled_ns) = rx.recv().await {
                                    lane.post(scheduled_ns).await;
                                    loads[index].fetch_sub(1, Ordering::Relaxed);
                                }
                                lane
                            }));
                        }
                        let mut lanes = Vec::new();
                        for t in tasks {
                            if let Ok(lane) = t.await {
                                lanes.push(lane);
                            }
                        }
                        lanes
                    });
                    let _ = done_tx.send(lanes);
                });
            }
            set_timer_slack_ns(1_000);
            let priority = raise_timer_priority();
            let mut lag = new_histogram();
            let t0 = Instant::now() + Duration::from_millis(20);
            let first_ns = (t0 - shared.start).as_nanos() as u64;
            let mut last_ns = first_ns;
            for k in 0..count {
                let due = t0 + interval.mul_f64(k as f64);
                sleep_until_precise(due);
                lag.saturating_record((due.elapsed().as_micros() as u64).max(1));
                let scheduled_ns = (due - shared.start).as_nanos() as u64;
                last_ns = scheduled_ns;
                let lane = (0..plan.lanes)
                    .min_by_key(|&l| loads[l].load(Ordering::Relaxed))
                    .unwrap_or(0);
                loads[lane].fetch_add(1, Ordering::Relaxed);
                let _ = senders[lane].send(scheduled_ns);
            }
            drop(senders);
            let mut published = Published {
                first_ns,
                last_ns,
                dispatch_lag: Some(lag),
                timer_priority: priority,
                ..Published::default()
            };
            // The lanes finish their queues; bounded so a hung server cannot hang the bench.
            match done_rx.recv_timeout(Duration::from_secs(60)) {
                Ok(lanes) if lanes.len() == plan.lanes => published.absorb(lanes),
                _ => {
                    published
                        .errors
                        .insert("publisher lanes did not finish within 60 s".into(), 1);
                    published.per_lane = vec![0; plan.lanes];
                }
            }
            published
        })
        .expect("publisher thread")
}

/// The schedule thread runs under SCHED_FIFO when allowed (it sleeps almost all the time), so
/// that a busy machine does not delay its wake-ups; otherwise at nice -10 when allowed.
/// Returns what it got.
fn raise_timer_priority() -> &'static str {
    let param = libc::sched_param { sched_priority: 10 };
    // SAFETY: 0 = the calling thread; `param` is a valid pointer.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) } == 0 {
        return "SCHED_FIFO";
    }
    if nice_this_thread(-10) {
        "nice -10"
    } else {
        "normal"
    }
}

/// Sets this thread's nice value (Linux: per thread); false when not allowed.
pub fn nice_this_thread(nice: i32) -> bool {
    // SAFETY: plain syscalls about the calling thread.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, nice) == 0
    }
}

fn set_timer_slack_ns(ns: u64) {
    // SAFETY: affects only the calling thread's timer slack.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, ns as libc::c_ulong);
    }
}

/// Sleeps until `SPIN` before `due`, then spins: tokio's timer has 1 ms granularity, and on
/// this VM a thread sleep (timer slack 1 µs) overshoots by ~30–60 µs typically and by over
/// 100 µs at p99; what is left over shows up as "schedule lag", and counts as latency.
const SPIN: Duration = Duration::from_micros(200);

fn sleep_until_precise(due: Instant) {
    loop {
        let now = Instant::now();
        if now >= due {
            return;
        }
        let left = due - now;
        if left > SPIN + Duration::from_micros(50) {
            std::thread::sleep(left - SPIN);
        } else {
            std::hint::spin_loop();
        }
    }
}

/// The closed-loop publisher for throughput: `lanes` publishers post batches back to back for
/// `duration`, each waiting while more than `window` events per subscriber are published but not
/// yet received (so the measure is what the server delivers, not how fast it queues).
#[derive(Debug, Clone, Copy)]
pub struct ClosedLoop {
    pub batch: usize,
    pub lanes: usize,
    pub duration: Duration,
    /// Events in flight per subscriber; 0 = no window (pure closed loop on the 202s).
    pub window: u64,
}

pub fn publish_closed_loop(
    plan: ClosedLoop,
    nodes: Vec<Endpoints>,
    token: String,
    subscribers: usize,
    shared: Arc<Shared>,
) -> std::thread::JoinHandle<Published> {
    std::thread::Builder::new()
        .name("publisher".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("publisher runtime");
            nice_this_thread(-10);
            runtime.block_on(async move {
                let started = shared.now_ns();
                let deadline = Instant::now() + plan.duration;
                let issued = Arc::new(AtomicU64::new(0));
                let mut tasks = Vec::new();
                for index in 0..plan.lanes {
                    let mut lane = Lane::on_node(index, &nodes, &token, plan.batch, subscribers);
                    lane.groups = shared.groups;
                    let shared = Arc::clone(&shared);
                    let issued = Arc::clone(&issued);
                    tasks.push(tokio::spawn(async move {
                        let subs = subscribers.max(1) as u64;
                        while Instant::now() < deadline {
                            if plan.window > 0 {
                                let limit = plan.window * subs;
                                while issued.load(Ordering::Relaxed) * subs
                                    > shared.delivered.load(Ordering::Relaxed) + limit
                                    && Instant::now() < deadline
                                {
                                    tokio::time::sleep(Duration::from_millis(1)).await;
                                }
                                if Instant::now() >= deadline {
                                    break;
                                }
                            }
                            issued.fetch_add(plan.batch as u64, Ordering::Relaxed);
                            if !lane.post(shared.now_ns()).await {
                                issued.fetch_sub(plan.batch as u64, Ordering::Relaxed);
                                if lane.errors.values().sum::<u64>() > 100 {
                                    break;
                                }
                            }
                        }
                        lane
                    }));
                }
                let mut lanes = Vec::new();
                for t in tasks {
                    if let Ok(lane) = t.await {
                        lanes.push(lane);
                    }
                }
                let mut published = Published {
                    first_ns: started,
                    last_ns: shared.now_ns(),
                    ..Published::default()
                };
                published.absorb(lanes);
                published
            })
        })
        .expect("publisher thread")
}

/// Result of the handshake hammer.
#[derive(Debug, Default)]
pub struct Handshakes {
    pub ok: u64,
    pub failures: BTreeMap<String, u64>,
    pub secs: f64,
    pub latency: Option<Histogram<u64>>,
}

/// `total` authenticated handshakes (each reads its welcome) by `concurrency` connectors, each
/// from its own source address; the sockets stay open until all are done, as subscribers would.
pub async fn hammer_handshakes(
    endpoints: Endpoints,
    token: Arc<str>,
    total: usize,
    concurrency: usize,
) -> Handshakes {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let next = Arc::clone(&next);
        let token = Arc::clone(&token);
        workers.push(tokio::spawn(async move {
            let mut open = Vec::new();
            let mut failures: BTreeMap<String, u64> = BTreeMap::new();
            let mut latency = new_histogram();
            let deadline = Instant::now() + Duration::from_secs(120);
            while next.fetch_add(1, Ordering::Relaxed) < total && Instant::now() < deadline {
                let t = Instant::now();
                match open_subscriber(&endpoints, &token).await {
                    Ok(ws) => {
                        latency.saturating_record((t.elapsed().as_micros() as u64).max(1));
                        open.push(ws);
                    }
                    Err(e) => *failures.entry(e).or_default() += 1,
                }
            }
            (open, failures, latency, Instant::now())
        }));
    }
    let mut result = Handshakes::default();
    let mut latency = new_histogram();
    let mut sockets = Vec::new();
    let mut last = started;
    for w in workers {
        if let Ok((open, failures, l, finished)) = w.await {
            result.ok += open.len() as u64;
            sockets.push(open);
            for (e, n) in failures {
                *result.failures.entry(e).or_default() += n;
            }
            let _ = latency.add(&l);
            last = last.max(finished);
        }
    }
    result.secs = (last - started).as_secs_f64();
    result.latency = Some(latency);
    drop(sockets);
    result
}

/// Checks of the verifier itself, run by `--smoke` (a `harness = false` bench has no unit tests).
pub fn self_check() -> Result<(), String> {
    let frame = r#"{"id":"ab","event_type":"pdfm","timestamp":"t","message":"BENCH","body":{"l":2,"s":41,"t":123456789}}"#;
    if parse_event(frame) != Some((2, 41, 123_456_789))
        || parse_event(r#"{"body":{"x":1}}"#).is_some()
    {
        return Err("parse_event".into());
    }
    let mut c = LaneCheck::default();
    for s in [0, 2, 1, 1, 3, 5] {
        c.see(s);
    }
    if (c.reordered, c.duplicates, c.distinct()) != (2, 1, 5) {
        return Err(format!("LaneCheck: {c:?}"));
    }
    Ok(())
}
