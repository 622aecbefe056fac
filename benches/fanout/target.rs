//! The server under test, as a child process: the real `events-hub` binary, or the baseline
//! (this bench binary re-executed with `serve-baseline`). Started from the main thread, killed
//! when dropped, and killed by the kernel if the bench itself dies (`PR_SET_PDEATHSIG`).

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Hub,
    Baseline,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Hub => "hub",
            Kind::Baseline => "baseline",
        }
    }
}

/// Where the generator sends its traffic.
#[derive(Debug, Clone, Copy)]
pub struct Endpoints {
    /// `ws://` subscribe endpoint.
    pub ws: SocketAddr,
    /// `POST /v1/events` endpoint.
    pub http: SocketAddr,
}

pub struct Server {
    pub endpoints: Endpoints,
    child: Child,
    stderr_path: PathBuf,
    done: bool,
}

/// How a server ended.
pub struct Stopped {
    pub status: Option<ExitStatus>,
    pub stop_secs: f64,
    /// Non-empty stderr lines (the hub runs at `warn`, so every line is worth reading).
    pub stderr: Vec<String>,
}

impl Server {
    /// Starts the server and waits for its "listening" line.
    pub fn start(
        kind: Kind,
        jwt_secret: &str,
        env: &[(String, String)],
        log_dir: &Path,
        label: &str,
    ) -> Result<Server, String> {
        std::fs::create_dir_all(log_dir).map_err(|e| format!("{}: {e}", log_dir.display()))?;
        let stderr_path = log_dir.join(format!("{label}.stderr"));
        let stderr =
            File::create(&stderr_path).map_err(|e| format!("{}: {e}", stderr_path.display()))?;
        let mut command = match kind {
            Kind::Hub => {
                let mut c = Command::new(env!("CARGO_BIN_EXE_events-hub"));
                c.args(["--listen", "127.0.0.1:0"])
                    .env("EVENTS_HUB__AUTH__JWT_SECRET", jwt_secret)
                    .env("EVENTS_HUB__LOG__LEVEL", "warn")
                    .env_remove("RUST_LOG");
                for (key, value) in env {
                    c.env(key, value);
                }
                c
            }
            Kind::Baseline => {
                let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
                let mut c = Command::new(exe);
                c.arg("serve-baseline");
                c
            }
        };
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr));
        // SAFETY: prctl is async-signal-safe; it only tells the kernel to kill the child when
        // the thread that spawned it (the bench's main thread) ends.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start the {}: {e}", kind.name()))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(first)) = lines.next() {
                let _ = tx.send(first);
            }
            // Keep draining so the child never blocks on a full pipe.
            for _ in lines {}
        });
        let mut server = Server {
            endpoints: Endpoints {
                ws: SocketAddr::from(([127, 0, 0, 1], 0)),
                http: SocketAddr::from(([127, 0, 0, 1], 0)),
            },
            child,
            stderr_path,
            done: false,
        };
        let first = rx.recv_timeout(Duration::from_secs(20)).map_err(|_| {
            format!(
                "the {} printed no listening line; stderr: {}",
                kind.name(),
                server.stderr_lines().join(" | ")
            )
        })?;
        server.endpoints = parse_banner(kind, &first)
            .ok_or_else(|| format!("unexpected first line from the {}: {first}", kind.name()))?;
        Ok(server)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Still running?
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn stderr_lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.stderr_path)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// SIGTERM, then wait (at most `grace`) for the exit; SIGKILL after that.
    pub fn stop(mut self, grace: Duration) -> Stopped {
        let started = Instant::now();
        let pid = self.pid() as libc::pid_t;
        let mut status = self.child.try_wait().ok().flatten();
        if status.is_none() {
            // SAFETY: plain syscall on our own child's pid.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
            while started.elapsed() < grace {
                if let Ok(Some(s)) = self.child.try_wait() {
                    status = Some(s);
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        if status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        self.done = true;
        Stopped {
            status,
            stop_secs: started.elapsed().as_secs_f64(),
            stderr: self.stderr_lines(),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn parse_banner(kind: Kind, line: &str) -> Option<Endpoints> {
    match kind {
        // "events-hub 0.1.0 listening on http://127.0.0.1:PORT"
        Kind::Hub => {
            let addr: SocketAddr = line.split("http://").nth(1)?.trim().parse().ok()?;
            Some(Endpoints {
                ws: addr,
                http: addr,
            })
        }
        // "baseline listening ws=ADDR http=ADDR"
        Kind::Baseline => {
            let mut ws = None;
            let mut http = None;
            for word in line.split_whitespace() {
                if let Some(a) = word.strip_prefix("ws=") {
                    ws = a.parse().ok();
                } else if let Some(a) = word.strip_prefix("http=") {
                    http = a.parse().ok();
                }
            }
            Some(Endpoints {
                ws: ws?,
                http: http?,
            })
        }
    }
}

/// VmRSS from /proc/<pid>/status, in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// utime + stime (fields 14 and 15 of /proc/<pid>/stat), in clock ticks.
pub fn cpu_ticks(stat_path: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(stat_path).ok()?;
    // The command name may contain spaces; the fields after it are space-separated.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state), so field N is at index N - 3.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Machine-wide busy and steal time from /proc/stat, in clock ticks.
pub fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user)
    let busy = v.first()? + v.get(1)? + v.get(2)? + v.get(5)? + v.get(6)?;
    let steal = v.get(7).copied().unwrap_or(0);
    Some((busy, steal))
}

pub fn ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// Raises the soft open-files limit to the hard limit; returns the new soft limit.
pub fn raise_nofile_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid pointer to a local rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    limit.rlim_cur
}
