//! `events-hub publish`: `POST /v1/events` to a hub, printing each receipt as one JSON line.
//!
//! Two forms, one clear rule each:
//! - `publish CHANNEL MESSAGE [--body JSON | --body -]`: one event; `--body -` reads the body
//!   from stdin (explicit, so a script with an open stdin never hangs waiting for one).
//! - `publish --ndjson`: every non-empty stdin line is a full publish object
//!   (`{"event_type":…,"message":…,"body":…,"client_id":…}`), published one request per line,
//!   in order, as soon as the line is read (so it works at the end of a long-running pipe).
//!   The first line the hub refuses stops the run: the lines before it are published (their
//!   receipts were printed), nothing after it is sent.

use std::io::Write;
use std::time::Duration;

use clap::Args;
use serde_json::{Map, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

use super::error::CliError;
use super::remote::{Remote, RemoteArgs};

pub const EXAMPLES: &str = "\
Examples:
  export EVENTS_HUB_TOKEN=$(events-hub mint-token --sub ci --claims EVENTS_PUBLISH)
  events-hub publish pdfm VM_STATE_CHANGED --body '{\"vm_id\":\"vm-1\",\"current_state\":\"running\"}'
  echo '{\"host_id\":\"h-1\",\"state\":\"healthy\"}' | events-hub publish orchestrator HOST_HEALTH_UPDATE --body -
  # One event per line, in order:
  printf '%s\\n' '{\"event_type\":\"pdfm\",\"message\":\"VM_DELETED\",\"body\":{\"vm_id\":\"vm-1\"}}' \\
    | events-hub publish --ndjson --url http://hub.example:8080
  # A hub serving TLS with a certificate from a private CA:
  events-hub publish pdfm VM_DELETED --url https://hub.example:8443 --ca-file /etc/events-hub/ca.pem

Prints the hub's receipt, {\"ids\":[…],\"recipients\":N}, one line per event.
Exit codes: 0 published, 1 the hub refused (its error body is shown), cannot be reached, or
its TLS certificate is not trusted, 2 usage or input error (a bad --ca-file too).";

#[derive(Debug, Args)]
pub struct PublishArgs {
    /// The channel (`event_type`), e.g. pdfm, orchestrator.
    #[arg(required_unless_present = "ndjson")]
    pub channel: Option<String>,
    /// The event's `message`, e.g. VM_STATE_CHANGED.
    #[arg(required_unless_present = "ndjson")]
    pub message: Option<String>,
    /// The event's `body`: a JSON object, or `-` to read it from stdin.
    #[arg(long, value_name = "JSON", conflicts_with = "ndjson")]
    pub body: Option<String>,
    /// Deliver to this one client only (its `client_id` from the welcome frame).
    #[arg(long, value_name = "UUID", conflicts_with = "ndjson")]
    pub client_id: Option<String>,
    /// Read full publish objects from stdin, one JSON object per line, and publish each.
    #[arg(long, conflicts_with_all = ["channel", "message"])]
    pub ndjson: bool,
    /// Give up on a request after this many seconds.
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub timeout_secs: u64,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

/// Runs the command on a runtime of its own.
pub fn run(args: &PublishArgs) -> Result<(), CliError> {
    let remote = args.remote.resolve()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(publish(args, &remote))
}

async fn publish(args: &PublishArgs, remote: &Remote) -> Result<(), CliError> {
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(args.timeout_secs.max(1)))
        // Our own rustls configuration (webpki roots, `--ca-file`, the ring provider).
        .tls_backend_preconfigured((*remote.tls).clone())
        .build()
        .map_err(|e| CliError::network(&e))?;
    let poster = Poster {
        client,
        remote,
        endpoint: remote.http("/v1/events"),
    };
    if args.ndjson {
        return publish_lines(&poster).await;
    }
    let event = single_event(args).await?;
    poster.post(&event).await
}

/// The one event of `publish CHANNEL MESSAGE`.
async fn single_event(args: &PublishArgs) -> Result<Value, CliError> {
    let (Some(channel), Some(message)) = (&args.channel, &args.message) else {
        return Err(CliError::Usage(
            "CHANNEL and MESSAGE are required (or --ndjson)".into(),
        ));
    };
    let mut event = Map::new();
    event.insert("event_type".into(), Value::String(channel.clone()));
    event.insert("message".into(), Value::String(message.clone()));
    if let Some(body) = &args.body {
        let text = if body == "-" {
            let mut text = String::new();
            tokio::io::stdin().read_to_string(&mut text).await?;
            text
        } else {
            body.clone()
        };
        let body: Value = serde_json::from_str(&text).map_err(|e| CliError::Input {
            what: "--body".into(),
            message: format!("not JSON: {e}"),
        })?;
        event.insert("body".into(), body);
    }
    if let Some(client_id) = &args.client_id {
        event.insert("client_id".into(), Value::String(client_id.clone()));
    }
    Ok(Value::Object(event))
}

/// `--ndjson`: one request per non-empty line, in order; stops at the first failure.
async fn publish_lines(poster: &Poster<'_>) -> Result<(), CliError> {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut number = 0usize;
    while let Some(line) = lines.next_line().await? {
        number += 1;
        if line.trim().is_empty() {
            continue;
        }
        let what = || format!("stdin line {number}");
        let event: Value = serde_json::from_str(&line).map_err(|e| CliError::Input {
            what: what(),
            message: format!("not JSON: {e}"),
        })?;
        if !event.is_object() {
            return Err(CliError::Input {
                what: what(),
                message: "must be one publish object, {\"event_type\":…,\"message\":…}".into(),
            });
        }
        poster.post(&event).await.map_err(|error| match error {
            CliError::Refused { status, body } => CliError::Refused {
                status,
                body: format!("{body} (stdin line {number}; the lines before it were published)"),
            },
            other => other,
        })?;
    }
    Ok(())
}

struct Poster<'a> {
    client: reqwest::Client,
    remote: &'a Remote,
    endpoint: reqwest::Url,
}

impl Poster<'_> {
    /// Posts one publish body and prints the receipt line; the hub's error body otherwise.
    async fn post(&self, event: &Value) -> Result<(), CliError> {
        let mut request = self.client.post(self.endpoint.clone()).json(event);
        if let Some((name, value)) = self.remote.credential.header() {
            request = request.header(name, value);
        }
        let response = request.send().await.map_err(|e| CliError::network(&e))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| CliError::network(&e))?;
        if !status.is_success() {
            return Err(CliError::Refused {
                status: status.as_u16(),
                body: text.trim().to_owned(),
            });
        }
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{}", text.trim())?;
        stdout.flush()?;
        Ok(())
    }
}
