//! The Redis of the cluster scenarios (issue 14): Debian's `redis-server`, no persistence, on a
//! free loopback port in its own temp dir, as a child process killed with the bench. Its
//! counters (`INFO`) are read with `redis-cli` (Debian's `redis-tools`, which `redis-server`
//! depends on), so the bench needs no Redis client library of its own.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Redis {
    child: Child,
    port: u16,
    dir: PathBuf,
}

/// Redis's counters at one point.
#[derive(Debug, Clone, Copy, Default)]
pub struct RedisCounters {
    pub net_in: u64,
    pub net_out: u64,
    pub commands: u64,
}

impl Redis {
    /// Starts `redis-server` and waits (≤ 10 s) until it answers PING.
    pub fn start(label: &str) -> Result<Redis, String> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port for redis-server: {e}"))?
            .port();
        let dir = std::env::temp_dir().join(format!("events-hub-bench-{label}-{port}"));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: prctl is async-signal-safe; the kernel kills Redis if the bench dies.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = command.spawn().map_err(|e| {
            format!("cannot start redis-server ({e}); install Debian's redis-server")
        })?;
        let redis = Redis { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while redis.cli(&["PING"]).as_deref() != Some("PONG") {
            if Instant::now() > deadline {
                return Err(format!("redis-server on port {port} did not answer PING"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(redis)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Bytes in and out and commands processed since Redis started.
    pub fn counters(&self) -> Option<RedisCounters> {
        let info = self.cli(&["INFO", "stats"])?;
        let field = |name: &str| -> Option<u64> {
            info.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|v| v.trim().parse().ok())
        };
        Some(RedisCounters {
            net_in: field("total_net_input_bytes")?,
            net_out: field("total_net_output_bytes")?,
            commands: field("total_commands_processed")?,
        })
    }

    /// `used_memory` in bytes.
    pub fn used_memory(&self) -> Option<u64> {
        let info = self.cli(&["INFO", "memory"])?;
        info.lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
    }

    fn cli(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
