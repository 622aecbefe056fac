//! `events-hub tail`: subscribe over WebSocket and print each event, one JSON object per line
//! when stdout is not a terminal (the frame exactly as the hub sent it), a short coloured line
//! on a terminal.
//!
//! It never loses or repeats an event across a disconnect: it keeps the `epoch` and, per
//! channel, the last `seq` it printed, and reconnects (exponential back-off, 0.5 s doubling up
//! to 10 s, with jitter) with `since=<channel>:<seq>,…&epoch=<epoch>` (SPEC §12, api.md
//! "History and resume"); a frame at or below a channel's last seq is dropped. When the welcome
//! shows another epoch (the hub restarted, its history was lost), it reconnects once more from
//! seq 0 of the new epoch, so what the new hub published before `tail` got back is printed too.
//! Close codes 4500–4999 mean "do not reconnect" (SPEC §11): `tail` exits 1 on them, as on a
//! refused handshake (401, 403, 400); 409, 429 and 5xx are retried.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use clap::Args;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};

use super::error::CliError;
use super::remote::{Remote, RemoteArgs};
use crate::protocol::WELCOME_MESSAGE;

pub const EXAMPLES: &str = "\
Examples:
  export EVENTS_HUB_TOKEN=$(events-hub mint-token --sub ops --claims READ_ONLY)
  events-hub tail pdfm,orchestrator
  # Ten events as JSON lines, then exit:
  events-hub tail pdfm --count 10 --url http://hub.example:8080 | jq .message
  # A hub serving TLS with a certificate from a private CA:
  events-hub tail pdfm --url https://hub.example:8443 --ca-file /etc/events-hub/ca.pem
  # Resume after the last event you have (its seq and epoch):
  events-hub tail pdfm --since 41 --epoch 1795372862932252
  events-hub tail pdfm,orchestrator --since pdfm:41,orchestrator:7 --epoch 1795372862932252

Exit codes: 0 after --count events (or Ctrl-C), 1 the hub refused the subscription, asked
not to reconnect, or its TLS certificate is not trusted, 2 usage error (a bad --ca-file too).
Connection losses are retried, resuming where it left off.";

/// First wait before a reconnect; doubled after each failure up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// TCP connect plus the WebSocket handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// `tail` pings the hub three times per `--idle-timeout-secs`, so a silent socket means a
/// dead link whatever the hub's own `ping_interval`: nothing heard for that long (three pings
/// unanswered) and it reconnects.
const PINGS_PER_IDLE_TIMEOUT: u32 = 3;

#[derive(Debug, Args)]
pub struct TailArgs {
    /// Channels to subscribe to, comma-separated (`global` is always included).
    #[arg(value_delimiter = ',', required = true, value_name = "EVENT_TYPES")]
    pub event_types: Vec<String>,
    /// Resume after these seqs: `CHANNEL:SEQ[,CHANNEL:SEQ…]`, or a bare `SEQ` when tailing a
    /// single channel. Give --epoch too.
    #[arg(long, value_name = "SEQS")]
    pub since: Option<String>,
    /// The epoch the --since seqs belong to (every event carries it).
    #[arg(long, value_name = "EPOCH", requires = "since")]
    pub epoch: Option<u64>,
    /// Exit after printing this many events.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// One JSON object per line even on a terminal.
    #[arg(long)]
    pub json: bool,
    /// Reconnect when nothing (not even a pong to tail's own pings, sent three times per
    /// period) was heard for this many seconds: a link that died without closing.
    #[arg(long, default_value_t = 45, value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub idle_timeout_secs: u64,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

/// Runs the command on a runtime of its own, until `--count` events, Ctrl-C or SIGTERM.
pub fn run(args: &TailArgs) -> Result<(), CliError> {
    let remote = args.remote.resolve()?;
    let channels: Vec<String> = args
        .event_types
        .iter()
        .map(|c| c.trim().to_ascii_lowercase())
        .filter(|c| !c.is_empty())
        .collect();
    if channels.is_empty() {
        return Err(CliError::Usage("name at least one channel to tail".into()));
    }
    let cursor = Cursor {
        epoch: args.epoch,
        seqs: parse_since(args.since.as_deref(), &channels)?,
    };
    let printer = Printer::new(args.json || !std::io::stdout().is_terminal());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut tail = Tail {
            remote,
            channels,
            cursor,
            printer,
            remaining: args.count,
            idle_limit: Duration::from_secs(args.idle_timeout_secs),
        };
        tokio::select! {
            result = tail.run() => result,
            () = stop_signal() => Ok(()),
        }
    })
}

/// `--since`: `pdfm:41,orchestrator:7`, or `41` when exactly one channel (besides `global`) is
/// tailed.
fn parse_since(
    since: Option<&str>,
    channels: &[String],
) -> Result<BTreeMap<String, u64>, CliError> {
    let mut seqs = BTreeMap::new();
    let Some(since) = since else {
        return Ok(seqs);
    };
    let usage = |m: String| CliError::Usage(format!("--since {since:?}: {m}"));
    let items: Vec<&str> = since.split(',').map(str::trim).collect();
    for item in &items {
        let (channel, seq) = match item.split_once(':') {
            Some((channel, seq)) => (channel.trim().to_ascii_lowercase(), seq.trim()),
            None => {
                let named: Vec<&String> = channels.iter().filter(|c| *c != "global").collect();
                match (items.len(), named.as_slice()) {
                    (1, [only]) => ((*only).clone(), *item),
                    _ => {
                        return Err(usage(
                            "a bare seq needs exactly one channel; write CHANNEL:SEQ,…".into(),
                        ));
                    }
                }
            }
        };
        let seq: u64 = seq
            .parse()
            .map_err(|_| usage(format!("{seq:?} is not a seq (a whole number >= 0)")))?;
        if channel.is_empty() || seqs.insert(channel.clone(), seq).is_some() {
            return Err(usage(format!(
                "{item:?} names no channel, or one given twice"
            )));
        }
    }
    Ok(seqs)
}

/// Where the stream is: the hub's epoch and, per channel, the last seq printed (or the
/// welcome's position, before any).
#[derive(Debug, Default)]
struct Cursor {
    epoch: Option<u64>,
    seqs: BTreeMap<String, u64>,
}

/// What the welcome means for the session.
#[derive(Debug, PartialEq, Eq)]
enum Welcome {
    Continue,
    /// The hub restarted since the cursor's epoch: start over from seq 0 of its new epoch.
    Restarted,
}

impl Cursor {
    /// `since=…&epoch=…`, when there is anything to resume.
    fn query(&self) -> Vec<(&'static str, String)> {
        let mut query = Vec::new();
        if !self.seqs.is_empty() {
            let since: Vec<String> = self.seqs.iter().map(|(c, s)| format!("{c}:{s}")).collect();
            query.push(("since", since.join(",")));
            if let Some(epoch) = self.epoch {
                query.push(("epoch", epoch.to_string()));
            }
        }
        query
    }

    fn welcome(&mut self, body: &Value) -> Welcome {
        let epoch = body["epoch"].as_u64();
        if let (Some(old), Some(new)) = (self.epoch, epoch)
            && old != new
            && !self.seqs.is_empty()
        {
            eprintln!(
                "events-hub tail: the hub restarted (epoch {old} -> {new}); reading what it has \
                 kept since"
            );
            self.epoch = Some(new);
            self.seqs = subscriptions(body).into_iter().map(|c| (c, 0)).collect();
            return Welcome::Restarted;
        }
        if body["recovered"] == Value::Bool(false) {
            eprintln!(
                "events-hub tail: some missed events are no longer kept by the hub: {}",
                body["reason"].as_str().unwrap_or("no reason given")
            );
        }
        if let Some(ignored) = body["ignored_event_types"].as_array() {
            eprintln!("events-hub tail: the hub has no channel(s) {ignored:?}; ignored");
        }
        self.epoch = epoch;
        if let Some(positions) = body["positions"].as_object() {
            for (channel, seq) in positions {
                if let Some(seq) = seq.as_u64() {
                    self.seqs.insert(channel.clone(), seq);
                }
            }
        }
        Welcome::Continue
    }

    /// Whether the event is new (and then records it): a seq at or below the channel's last
    /// one in the same epoch was printed already.
    fn advance(&mut self, channel: &str, seq: u64, epoch: Option<u64>) -> bool {
        if epoch.is_some() && epoch != self.epoch {
            // Cannot happen within one session; take the event's numbering.
            self.epoch = epoch;
        } else if let Some(last) = self.seqs.get(channel) {
            if seq <= *last {
                return false;
            }
            if seq > last + 1 {
                eprintln!(
                    "events-hub tail: {channel}: seq {seq} follows {last}; {} event(s) missing",
                    seq - last - 1
                );
            }
        }
        self.seqs.insert(channel.to_owned(), seq);
        true
    }
}

fn subscriptions(body: &Value) -> Vec<String> {
    body["subscriptions"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|c| c.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// How one connection ended.
enum End {
    /// `--count` reached, or stdout closed.
    Done,
    /// Reconnect at once (the hub restarted).
    Again,
    /// Reconnect after the back-off; `welcomed` resets it.
    Lost { why: String, welcomed: bool },
}

/// How a handshake went, when it is not a refusal to give up on.
enum Handshake {
    /// Boxed: the socket is large, the other variant a string.
    Open(Box<Ws>),
    /// Reconnect after the back-off, for this reason.
    Retry(String),
}

/// What a text frame asks of the frame loop.
enum Step {
    Next,
    /// The welcome shows the hub restarted: close and reconnect at once.
    Restarted,
    /// `--count` reached, or stdout closed: close and exit.
    Done,
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The reconnect decision for a socket that ended (closed, broken, or a close frame): close
/// codes 4500–4999 are final (SPEC §11), anything else is retried after the back-off.
fn ended(
    frame: Option<Result<Message, tungstenite::Error>>,
    welcomed: bool,
) -> Result<End, CliError> {
    let why = match frame {
        Some(Ok(Message::Close(frame))) => {
            let (code, reason) = frame
                .map(|f| (u16::from(f.code), f.reason.to_string()))
                .unwrap_or((1005, String::new()));
            if (4500..=4999).contains(&code) {
                return Err(CliError::Final { code, reason });
            }
            format!("the hub closed the connection: {code} {reason}")
        }
        Some(Err(error)) => format!("connection lost: {error}"),
        _ => "the connection closed".into(),
    };
    Ok(End::Lost { why, welcomed })
}

struct Tail {
    remote: Remote,
    channels: Vec<String>,
    cursor: Cursor,
    printer: Printer,
    remaining: Option<u64>,
    idle_limit: Duration,
}

impl Tail {
    async fn run(&mut self) -> Result<(), CliError> {
        if self.remaining == Some(0) {
            return Ok(());
        }
        let mut backoff = BACKOFF_MIN;
        loop {
            match self.session().await? {
                End::Done => return Ok(()),
                End::Again => backoff = BACKOFF_MIN,
                End::Lost { why, welcomed } => {
                    if welcomed {
                        backoff = BACKOFF_MIN;
                    }
                    let wait = jittered(backoff);
                    eprintln!(
                        "events-hub tail: {why}; reconnecting in {:.1} s",
                        wait.as_secs_f64()
                    );
                    tokio::time::sleep(wait).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    fn request(&self) -> Result<tungstenite::handshake::client::Request, CliError> {
        let mut url = self.remote.ws("/v1/ws/subscribe");
        {
            let mut pairs = url.query_pairs_mut();
            pairs.append_pair("event_types", &self.channels.join(","));
            for (key, value) in self.cursor.query() {
                pairs.append_pair(key, &value);
            }
        }
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|e| CliError::Usage(format!("--url: {e}")))?;
        if let Some((name, value)) = self.remote.credential.header() {
            let value = HeaderValue::from_str(&value)
                .map_err(|_| CliError::Usage("the token or key is not a valid header".into()))?;
            request.headers_mut().insert(name, value);
        }
        Ok(request)
    }

    /// One connection: handshake, welcome, events until it ends.
    async fn session(&mut self) -> Result<End, CliError> {
        match self.connect().await? {
            Handshake::Open(ws) => self.frames(*ws).await,
            Handshake::Retry(why) => Ok(End::Lost {
                why,
                welcomed: false,
            }),
        }
    }

    /// The TCP connection, TLS for `wss://` (with [`Remote::tls`]) and the WebSocket
    /// handshake. A refusal that retrying cannot change (401, 403, 400, an untrusted
    /// certificate) is an error; a timeout, a network failure, 408, 409, 429 and 5xx are retried.
    async fn connect(&self) -> Result<Handshake, CliError> {
        let request = self.request()?;
        let connector = tokio_tungstenite::Connector::Rustls(self.remote.tls.clone());
        let connecting =
            tokio_tungstenite::connect_async_tls_with_config(request, None, false, Some(connector));
        match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
            Err(_) => Ok(Handshake::Retry("the handshake timed out".into())),
            Ok(Err(tungstenite::Error::Http(response))) => {
                let status = response.status().as_u16();
                let body = response
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).trim().to_owned())
                    .unwrap_or_default();
                if matches!(status, 408 | 409 | 429 | 500..=599) {
                    return Ok(Handshake::Retry(format!(
                        "the hub answered {status}: {body}"
                    )));
                }
                Err(CliError::Refused { status, body })
            }
            Ok(Err(error)) => match CliError::untrusted(&error) {
                Some(untrusted) => Err(untrusted),
                None => Ok(Handshake::Retry(format!("cannot connect: {error}"))),
            },
            Ok(Ok((ws, _))) => Ok(Handshake::Open(Box::new(ws))),
        }
    }

    /// The frame loop of an open socket: pings, the idle deadline, the welcome, and events,
    /// until `--count`, a restarted hub, or the socket's end ([`ended`] decides what then).
    async fn frames(&mut self, ws: Ws) -> Result<End, CliError> {
        let (mut sink, mut stream) = ws.split();
        let ping_every = self.idle_limit / PINGS_PER_IDLE_TIMEOUT;
        let mut ping =
            tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
        let mut welcomed = false;
        // Any frame (a pong to our pings included) pushes the deadline back; a separate timer,
        // so the ping ticks cannot restart it.
        let mut silent_until = tokio::time::Instant::now() + self.idle_limit;
        loop {
            let frame = tokio::select! {
                frame = stream.next() => frame,
                () = tokio::time::sleep_until(silent_until) => {
                    let why = format!(
                        "nothing heard from the hub for {} s",
                        self.idle_limit.as_secs()
                    );
                    return Ok(End::Lost { why, welcomed });
                }
                _ = ping.tick() => {
                    if let Err(error) = sink.send(Message::Ping(Default::default())).await {
                        let why = format!("connection lost: {error}");
                        return Ok(End::Lost { why, welcomed });
                    }
                    continue;
                }
            };
            silent_until = tokio::time::Instant::now() + self.idle_limit;
            let text = match frame {
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(Message::Close(_)) | Err(_)) | None => return ended(frame, welcomed),
                Some(Ok(_)) => continue,
            };
            let end = match self.text(text.as_str(), &mut welcomed)? {
                Step::Next => continue,
                Step::Restarted => End::Again,
                Step::Done => End::Done,
            };
            close(&mut sink, &mut stream).await;
            return Ok(end);
        }
    }

    /// A text frame: the welcome (once) or an event.
    fn text(&mut self, text: &str, welcomed: &mut bool) -> Result<Step, CliError> {
        let Ok(value) = serde_json::from_str::<Value>(text) else {
            eprintln!("events-hub tail: a frame that is not JSON: {text}");
            return Ok(Step::Next);
        };
        if !*welcomed && value["message"] == WELCOME_MESSAGE {
            *welcomed = true;
            if self.cursor.welcome(&value["body"]) == Welcome::Restarted {
                return Ok(Step::Restarted);
            }
            return Ok(Step::Next);
        }
        Ok(if self.frame(text, &value)? {
            Step::Done
        } else {
            Step::Next
        })
    }

    /// Prints an event frame (notices go to stderr); true once `--count` is reached or stdout
    /// is gone.
    fn frame(&mut self, text: &str, value: &Value) -> Result<bool, CliError> {
        let channel = value["event_type"].as_str().unwrap_or_default();
        let epoch = value["epoch"].as_u64();
        match value["seq"].as_u64() {
            Some(seq) => {
                if !self.cursor.advance(channel, seq, epoch) {
                    return Ok(false);
                }
            }
            // Targeted events carry an epoch and no seq; hub notices carry neither.
            None if epoch.is_some() => {}
            None => {
                let message = value["message"].as_str().unwrap_or_default();
                eprintln!("events-hub tail: the hub says {message}: {}", value["body"]);
                return Ok(false);
            }
        }
        match self.printer.print(text, value) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => return Ok(true),
            Err(error) => return Err(error.into()),
        }
        Ok(match &mut self.remaining {
            Some(n) => {
                *n = n.saturating_sub(1);
                *n == 0
            }
            None => false,
        })
    }
}

/// Sends our close frame and waits briefly for the hub's, so its per-IP slot is free before
/// the next handshake.
async fn close<S, R>(sink: &mut S, stream: &mut R)
where
    S: futures_util::Sink<Message> + Unpin,
    R: futures_util::Stream + Unpin,
{
    let _ = sink.send(Message::Close(None)).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while stream.next().await.is_some() {}
    })
    .await;
}

/// `base` plus up to a quarter more, so many tails do not reconnect in step after a restart.
fn jittered(base: Duration) -> Duration {
    let spread = u64::try_from(base.as_millis() / 4).unwrap_or(0);
    base + Duration::from_millis(rand::random_range(0..=spread))
}

/// SIGINT (Ctrl-C) or SIGTERM.
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut interrupt)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = interrupt.recv() => {}
    }
}

/// JSON lines (the frame as sent) or a short coloured line for a person.
struct Printer {
    json: bool,
    colour: bool,
}

impl Printer {
    fn new(json: bool) -> Self {
        Self {
            json,
            colour: std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        }
    }

    fn print(&self, text: &str, value: &Value) -> std::io::Result<()> {
        let mut out = std::io::stdout().lock();
        if self.json {
            writeln!(out, "{text}")?;
        } else {
            writeln!(out, "{}", self.human(value))?;
        }
        out.flush()
    }

    /// `18:41:04.149 pdfm #5 VM_STATE_CHANGED {"vm_id":…}`.
    fn human(&self, value: &Value) -> String {
        let paint = |code: &str, text: &str| {
            if self.colour {
                format!("\x1b[{code}m{text}\x1b[0m")
            } else {
                text.to_owned()
            }
        };
        let timestamp = value["timestamp"].as_str().unwrap_or_default();
        let time = timestamp.get(11..23).unwrap_or(timestamp);
        let seq = value["seq"]
            .as_u64()
            .map_or_else(|| "direct".to_owned(), |s| format!("#{s}"));
        let mut line = format!(
            "{} {} {} {}",
            paint("2", time),
            paint("36", value["event_type"].as_str().unwrap_or_default()),
            paint("2", &seq),
            paint("1;33", value["message"].as_str().unwrap_or_default()),
        );
        if let Some(body) = value.get("body") {
            line.push(' ');
            line.push_str(&body.to_string());
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn channels(list: &[&str]) -> Vec<String> {
        list.iter().map(|c| (*c).to_owned()).collect()
    }

    #[test]
    fn since_takes_channel_seqs_or_a_bare_seq_for_one_channel() {
        let seqs = parse_since(
            Some("pdfm:4, Orchestrator:2"),
            &channels(&["pdfm", "orchestrator"]),
        )
        .expect("valid");
        assert_eq!(seqs.get("pdfm"), Some(&4));
        assert_eq!(seqs.get("orchestrator"), Some(&2));
        let seqs = parse_since(Some("7"), &channels(&["pdfm", "global"])).expect("valid");
        assert_eq!(
            seqs.into_iter().collect::<Vec<_>>(),
            [("pdfm".to_owned(), 7)]
        );
        for bad in ["7", "pdfm:x", "pdfm:-1", ":3", "pdfm:1,pdfm:2"] {
            assert!(
                parse_since(Some(bad), &channels(&["pdfm", "orchestrator"])).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_cursor_resumes_drops_repeats_and_restarts_on_a_new_epoch() {
        let mut cursor = Cursor::default();
        let body = json!({"epoch": 10, "positions": {"pdfm": 3, "global": 0},
                          "subscriptions": ["pdfm", "global"]});
        assert_eq!(cursor.welcome(&body), Welcome::Continue);
        assert!(cursor.advance("pdfm", 4, Some(10)));
        assert!(!cursor.advance("pdfm", 4, Some(10)), "a repeat is dropped");
        assert!(!cursor.advance("pdfm", 2, Some(10)));
        assert_eq!(
            cursor.query(),
            [
                ("since", "global:0,pdfm:4".to_owned()),
                ("epoch", "10".to_owned())
            ]
        );
        // Same epoch: continue from the positions.
        assert_eq!(cursor.welcome(&body), Welcome::Continue);
        // Another epoch: start over from 0 on every subscribed channel.
        let body = json!({"epoch": 11, "positions": {"pdfm": 9, "global": 0},
                          "recovered": false, "subscriptions": ["pdfm", "global"]});
        assert_eq!(cursor.welcome(&body), Welcome::Restarted);
        assert_eq!(
            cursor.query(),
            [
                ("since", "global:0,pdfm:0".to_owned()),
                ("epoch", "11".to_owned())
            ]
        );
    }

    #[test]
    fn a_person_sees_time_channel_seq_message_and_body() {
        let printer = Printer {
            json: false,
            colour: false,
        };
        let line = printer.human(&json!({"event_type": "pdfm", "timestamp":
            "2026-11-22T18:41:04.149577Z", "message": "VM_STATE_CHANGED", "body": {"vm_id": "v"},
            "seq": 5}));
        assert_eq!(
            line,
            "18:41:04.149 pdfm #5 VM_STATE_CHANGED {\"vm_id\":\"v\"}"
        );
    }
}
