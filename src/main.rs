//! `events-hub`: run the hub, or use one of its helpers. Exit codes: 0 done, 1 runtime failure
//! (e.g. the address is in use), 2 invalid setting or usage.

use std::io::Read;
use std::process::ExitCode;

use clap::Parser;
use events_hub::app::{self, AppState};
use events_hub::auth::{self, TokenSpec};
use events_hub::cli::{self as commands, Cli, Command, GlobalArgs, HashKeyArgs, MintTokenArgs};
use events_hub::config::{ConfigError, EVENTS_PUBLISH, READ_ONLY, Settings, is_hmac};
use events_hub::server;
use jsonwebtoken::{Algorithm, EncodingKey};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        None => serve(&cli.global, &cli.serve.overrides()),
        Some(Command::Serve(args)) => serve(&cli.global, &cli.serve.merge(&args).overrides()),
        Some(_) if cli.serve.demo => {
            eprintln!("events-hub: --demo is a flag of `serve`");
            ExitCode::from(2)
        }
        Some(Command::Publish(args)) => commands::error::report(commands::publish::run(&args)),
        Some(Command::Tail(args)) => commands::error::report(commands::tail::run(&args)),
        Some(Command::CheckConfig(args)) => {
            commands::error::report(commands::check_config::run(&cli.global, &args))
        }
        Some(Command::MintToken(args)) => mint_token(&cli.global, &args),
        Some(Command::HashKey(args)) => hash_key(&args),
        Some(Command::ConformanceEcho) => conformance_echo(&cli.global),
    }
}

fn load_settings(global: &GlobalArgs) -> Result<Settings, ConfigError> {
    load_settings_with(global, &[])
}

/// The settings with `extra` overrides (`serve --demo`) after the global flags.
fn load_settings_with(
    global: &GlobalArgs,
    extra: &[(&'static str, String)],
) -> Result<Settings, ConfigError> {
    let mut overrides = global.overrides();
    overrides.extend_from_slice(extra);
    Settings::load(global.config.as_deref(), true, &overrides)
}

fn config_failure(error: &ConfigError) -> ExitCode {
    eprintln!("events-hub: {error}");
    ExitCode::from(2)
}

/// The test-only echo server for the Autobahn suite: the hub's socket handling, no hub.
fn conformance_echo(global: &GlobalArgs) -> ExitCode {
    let settings = match load_settings(global) {
        Ok(settings) => settings,
        Err(error) => return config_failure(&error),
    };
    events_hub::telemetry::init(&settings.log.level, settings.log.format);
    let listen = settings.server.listen;
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let entered = runtime.enter();
    let state = match AppState::build(settings, "conformance-echo-has-no-auth") {
        Ok(state) => state,
        Err(error) => return config_failure(&error),
    };
    let router = events_hub::routes::conformance_router(state.clone());
    let scheme = if state.tls.is_some() { "https" } else { "http" };
    drop(entered);
    serve_until_signal(runtime, listen, state, router, |local| {
        println!("events-hub conformance echo (test only) listening on {scheme}://{local}");
    })
}

fn serve(global: &GlobalArgs, overrides: &[(&'static str, String)]) -> ExitCode {
    let settings = match load_settings_with(global, overrides) {
        Ok(settings) => settings,
        Err(error) => return config_failure(&error),
    };
    events_hub::telemetry::init(&settings.log.level, settings.log.format);
    check_open_files(&settings);
    let algorithm = settings.auth.jwt_algorithm;

    // No secret configured: generate one so the first run works with no set-up.
    let generated = is_hmac(algorithm) && settings.auth.jwt_secret.is_empty();
    let secret = if generated {
        events_hub::protocol::new_id()
    } else {
        settings.auth.jwt_secret.clone()
    };
    let listen = settings.server.listen;
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    // Inside the runtime: the cluster broker starts its Redis tasks as it is built.
    let entered = runtime.enter();
    let state = match AppState::build(settings, &secret) {
        Ok(state) => state,
        Err(error) => return config_failure(&error),
    };
    drop(entered);

    let router = app::app(state.clone());
    let tls = state.tls.is_some();
    serve_until_signal(runtime, listen, state, router, |local| {
        print_banner(local, tls, generated.then_some(secret.as_str()), algorithm);
    })
}

/// The multi-threaded runtime the hub serves on; exit code 1 when it cannot start.
fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|error| {
            eprintln!("events-hub: cannot start the async runtime: {error}");
            ExitCode::from(1)
        })
}

/// Installs the signal handlers, binds, prints the banner and serves `router` on `runtime`
/// until SIGTERM/SIGINT. Exit code 0 after a graceful shutdown, 1 when it cannot start.
fn serve_until_signal(
    runtime: tokio::runtime::Runtime,
    listen: std::net::SocketAddr,
    state: AppState,
    router: axum::Router,
    banner: impl FnOnce(std::net::SocketAddr),
) -> ExitCode {
    runtime.block_on(async move {
        let signal = match shutdown_signal() {
            Ok(signal) => signal,
            Err(error) => {
                eprintln!("events-hub: cannot install signal handlers: {error}");
                return ExitCode::from(1);
            }
        };
        if let Err(error) = reload_on_hangup(&state) {
            eprintln!("events-hub: cannot install the SIGHUP handler: {error}");
            return ExitCode::from(1);
        }
        let listener = match tokio::net::TcpListener::bind(listen).await {
            Ok(listener) => listener,
            Err(error) => {
                eprintln!("events-hub: cannot listen on {listen}: {error}");
                return ExitCode::from(1);
            }
        };
        banner(listener.local_addr().unwrap_or(listen));
        match server::run_with(listener, state, router, signal).await {
            Ok(_) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("events-hub: server failed: {error}");
                ExitCode::from(1)
            }
        }
    })
}

/// Every socket is an open file: raise the soft limit, and warn when the connection cap cannot
/// be reached within it (the accept loop reports running out, but better to know at start).
fn check_open_files(settings: &Settings) {
    let Some(limit) = server::raise_open_files_limit() else {
        return;
    };
    // Room for the listener, logs, config files and HTTP clients that are not WebSockets.
    let needed = u64::from(settings.admission.max_connections.get()) + 64;
    if needed > limit {
        tracing::warn!(
            open_files_limit = limit,
            max_connections = settings.admission.max_connections,
            "admission.max_connections is above what the open-files limit allows; raise the \
             limit (ulimit -n, systemd LimitNOFILE) or lower admission.max_connections"
        );
    }
}

/// Registers SIGTERM and SIGINT (Ctrl-C) handlers now, before anything listens, and returns a
/// future that resolves on either. (Registering lazily, on first poll, would leave a window
/// in which a signal still kills the process outright.)
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = interrupt.recv() => {}
        }
    })
}

/// SIGHUP re-reads the TLS certificate and key (`Tls::reload` logs the outcome and keeps the
/// old ones on failure). Installed before the banner, and with TLS off too: the default action
/// of SIGHUP would kill the hub, and a closed terminal or a `systemctl reload` must not.
fn reload_on_hangup(state: &AppState) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = signal(SignalKind::hangup())?;
    let tls = state.tls.clone();
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            match &tls {
                // The error is logged by `reload`; the hub carries on with the old certificate.
                Some(tls) => {
                    let _ = tls.reload();
                }
                None => tracing::info!("SIGHUP: TLS is not configured, nothing to reload"),
            }
        }
    });
    Ok(())
}

/// What a person sees on start-up (stdout; logs go to stderr).
fn print_banner(
    local: std::net::SocketAddr,
    tls: bool,
    generated_secret: Option<&str>,
    algorithm: Algorithm,
) {
    let (http, ws) = if tls {
        ("https", "wss")
    } else {
        ("http", "ws")
    };
    let host = if local.ip().is_unspecified() {
        std::net::SocketAddr::new([127, 0, 0, 1].into(), local.port())
    } else {
        local
    };
    println!(
        "events-hub {} listening on {http}://{local}",
        env!("CARGO_PKG_VERSION")
    );
    let Some(secret) = generated_secret else {
        return;
    };
    let spec = TokenSpec {
        subject: "dev".into(),
        claims: vec![READ_ONLY.into(), EVENTS_PUBLISH.into()],
        ttl_secs: 24 * 3600,
        ..TokenSpec::default()
    };
    let Ok(token) = auth::mint_token(
        algorithm,
        &EncodingKey::from_secret(secret.as_bytes()),
        &spec,
    ) else {
        return;
    };
    println!();
    println!("No auth.jwt_secret is configured, so this run uses a generated one.");
    println!("Development token (sub \"dev\", claims READ_ONLY + EVENTS_PUBLISH, valid 24 h):");
    println!();
    println!("  export TOKEN={token}");
    println!();
    println!("Subscribe:");
    println!(
        "  websocat \"{ws}://{host}/v1/ws/subscribe?event_types=pdfm,health\" -H \"Authorization: Bearer {token}\""
    );
    println!("Publish:");
    println!(
        "  curl -X POST {http}://{host}/v1/events -H \"Authorization: Bearer $TOKEN\" -H \"Content-Type: application/json\" -d '{{\"event_type\":\"pdfm\",\"message\":\"VM_STATE_CHANGED\",\"body\":{{\"vm_id\":\"vm-1\",\"current_state\":\"running\"}}}}'"
    );
    println!();
    println!(
        "Tokens stop working when the hub restarts; set EVENTS_HUB__AUTH__JWT_SECRET to keep them."
    );
}

fn mint_token(global: &GlobalArgs, args: &MintTokenArgs) -> ExitCode {
    let settings = match load_settings(global) {
        Ok(settings) => settings,
        Err(error) => return config_failure(&error),
    };
    let algorithm = settings.auth.jwt_algorithm;
    for claim in &args.claims {
        if !auth::is_known_claim(claim) {
            let known = events_hub::config::KNOWN_CLAIMS.join(", ");
            eprintln!("events-hub: unknown claim {claim:?}; known: {known}");
            return ExitCode::from(2);
        }
    }
    let key = if is_hmac(algorithm) {
        if settings.auth.jwt_secret.is_empty() {
            eprintln!(
                "events-hub: no auth.jwt_secret is configured, so there is nothing to sign with.\n\
                 Set EVENTS_HUB__AUTH__JWT_SECRET (for both the hub and this command), or copy the\n\
                 development token the hub printed at start-up."
            );
            return ExitCode::from(2);
        }
        EncodingKey::from_secret(settings.auth.jwt_secret.as_bytes())
    } else {
        let Some(path) = &args.private_key else {
            eprintln!("events-hub: {algorithm:?} tokens need --private-key FILE (PEM)");
            return ExitCode::from(2);
        };
        let pem = match std::fs::read(path) {
            Ok(pem) => pem,
            Err(error) => {
                eprintln!("events-hub: cannot read {}: {error}", path.display());
                return ExitCode::from(2);
            }
        };
        let key = match algorithm {
            Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(&pem),
            _ => EncodingKey::from_rsa_pem(&pem),
        };
        match key {
            Ok(key) => key,
            Err(error) => {
                eprintln!(
                    "events-hub: {} is not a {algorithm:?} private key: {error}",
                    path.display()
                );
                return ExitCode::from(2);
            }
        }
    };
    let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    let spec = TokenSpec {
        subject: args.sub.clone(),
        claims: args.claims.clone(),
        roles: args.roles.clone(),
        ttl_secs: args.ttl_secs,
        issuer: non_empty(&settings.auth.jwt_issuer),
        audience: non_empty(&settings.auth.jwt_audience),
    };
    match auth::mint_token(algorithm, &key, &spec) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("events-hub: cannot sign the token: {error}");
            ExitCode::from(1)
        }
    }
}

fn hash_key(args: &HashKeyArgs) -> ExitCode {
    let key = if args.generate {
        events_hub::protocol::new_id()
    } else if let Some(key) = &args.key {
        key.clone()
    } else {
        let mut key = String::new();
        if let Err(error) = std::io::stdin().read_to_string(&mut key) {
            eprintln!("events-hub: cannot read the key from standard input: {error}");
            return ExitCode::from(1);
        }
        key.trim_end_matches(['\r', '\n']).to_owned()
    };
    if key.is_empty() {
        eprintln!("events-hub: the key is empty");
        return ExitCode::from(2);
    }
    if args.generate {
        println!("key:    {key}");
        println!("sha256: {}", auth::api_key_digest(&key));
    } else {
        println!("{}", auth::api_key_digest(&key));
    }
    ExitCode::SUCCESS
}
