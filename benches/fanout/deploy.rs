//! What one run measures: a single server (the hub or the baseline), or a cluster of hub nodes
//! on one Redis (issue 14). Started and stopped from the bench's main thread; how they ended
//! goes into the run's failures and notes.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::redis::Redis;
use crate::target::{self, Endpoints, Kind, Server};

/// A server or a cluster, as a column of the tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setup {
    Single(Kind),
    /// This many hub nodes in cluster mode on one `redis-server`.
    Cluster(usize),
}

impl Setup {
    pub fn name(self) -> &'static str {
        match self {
            Setup::Single(kind) => kind.name(),
            Setup::Cluster(1) => "1 node",
            Setup::Cluster(2) => "2 nodes",
            Setup::Cluster(3) => "3 nodes",
            Setup::Cluster(_) => "n nodes",
        }
    }
}

/// The running processes of one run.
pub struct Deployment {
    servers: Vec<Server>,
    redis: Option<Redis>,
}

/// What the load generator needs to know of a deployment.
pub struct Under<'a> {
    /// Subscriber `i` and publisher lane `i` use node `i % nodes.len()`.
    pub nodes: Vec<Endpoints>,
    pub server_pids: Vec<u32>,
    pub redis: Option<&'a Redis>,
}

impl Under<'_> {
    /// Resident memory of every server process together.
    pub fn rss_kib(&self) -> u64 {
        self.server_pids
            .iter()
            .filter_map(|&pid| target::rss_kib(pid))
            .sum()
    }

    /// A cluster node answers handshakes only once it reached Redis: wait (≤ 20 s) until
    /// every node's `/readyz` answers 200. A single server is ready once it listens.
    pub async fn ready(&self) -> Result<(), String> {
        if self.redis.is_none() {
            return Ok(());
        }
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(20);
        for node in &self.nodes {
            let url = format!("http://{}/readyz", node.http);
            loop {
                let status = client.get(&url).send().await.map(|r| r.status().as_u16());
                if status.as_ref().is_ok_and(|s| *s == 200) {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!("{url} did not answer 200 within 20 s: {status:?}"));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(())
    }
}

impl Deployment {
    pub fn start(
        setup: Setup,
        jwt_secret: &str,
        env: &[(String, String)],
        log_dir: &Path,
        label: &str,
    ) -> Result<Deployment, String> {
        match setup {
            Setup::Single(kind) => Ok(Deployment {
                servers: vec![Server::start(kind, jwt_secret, env, log_dir, label)?],
                redis: None,
            }),
            Setup::Cluster(n) => {
                let redis = Redis::start(label)?;
                let mut servers = Vec::with_capacity(n);
                for node in 0..n {
                    let mut env = env.to_vec();
                    env.push(("EVENTS_HUB__CLUSTER__REDIS_URL".into(), redis.url()));
                    env.push((
                        "EVENTS_HUB__CLUSTER__NODE_ID".into(),
                        format!("node-{node}"),
                    ));
                    let label = format!("{label}-node{node}");
                    servers.push(Server::start(Kind::Hub, jwt_secret, &env, log_dir, &label)?);
                }
                Ok(Deployment {
                    servers,
                    redis: Some(redis),
                })
            }
        }
    }

    pub fn under(&self) -> Under<'_> {
        Under {
            nodes: self.servers.iter().map(|s| s.endpoints).collect(),
            server_pids: self.servers.iter().map(Server::pid).collect(),
            redis: self.redis.as_ref(),
        }
    }

    /// Whether every server is still running.
    pub fn alive(&mut self) -> bool {
        self.servers.iter_mut().all(Server::alive)
    }

    /// SIGTERM to every server (each must exit 0 within 20 s), then Redis.
    pub fn stop(self, what: &str, log_dir: &Path, label: &str) -> (Vec<String>, Vec<String>) {
        let (mut failures, mut notes) = (Vec::new(), Vec::new());
        for server in self.servers {
            let stopped = server.stop(Duration::from_secs(20));
            match stopped.status {
                Some(s) if s.success() => {}
                Some(s) => failures.push(format!("the {what} exited with {s}")),
                None => failures.push(format!("the {what} did not exit within 20 s of SIGTERM")),
            }
            if stopped.stop_secs > 5.0 {
                notes.push(format!("stopping took {:.1} s", stopped.stop_secs));
            }
            for line in stopped.stderr.iter().take(5) {
                notes.push(format!("stderr: {line}"));
            }
            if stopped.stderr.len() > 5 {
                notes.push(format!(
                    "stderr: … {} more lines in {}/{label}*.stderr",
                    stopped.stderr.len() - 5,
                    log_dir.display()
                ));
            }
        }
        drop(self.redis);
        (failures, notes)
    }
}
