//! A Redis Cluster or Sentinel deployment of a test's own on loopback, made by
//! `scripts/redis-topologies.sh`, for tests that fail its nodes over. Stopped when dropped.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../scripts/redis-topologies.sh"
);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Cluster,
    Sentinel,
}

/// Real `redis-server` processes: a three-master cluster with a replica each, or a master,
/// a replica and three Sentinels.
#[derive(Debug)]
pub struct RedisDeployment {
    /// Its `REDIS_URL` (with `replica_acks=1`).
    pub url: String,
    kind: Kind,
    dir: PathBuf,
    /// Data nodes (cluster: masters first), then any Sentinels.
    ports: Vec<u16>,
}

impl RedisDeployment {
    pub fn cluster() -> RedisDeployment {
        Self::start(Kind::Cluster, 6)
    }

    pub fn sentinel() -> RedisDeployment {
        Self::start(Kind::Sentinel, 5)
    }

    fn start(kind: Kind, nodes: usize) -> RedisDeployment {
        let dir =
            std::env::temp_dir().join(format!("cqrs-redis-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("RedisDeployment: {e}"));
        let ports = spare_ports(nodes);
        let verb = match kind {
            Kind::Cluster => "cluster",
            Kind::Sentinel => "sentinel",
        };
        let mut deployment = RedisDeployment {
            url: String::new(),
            kind,
            dir,
            ports,
        };
        let out = deployment.script(verb, &deployment.ports.clone());
        deployment.url = out.trim().to_owned();
        deployment
    }

    /// The port of the master that holds `key` now.
    pub fn master_of(&self, key: &str) -> u16 {
        match self.kind {
            Kind::Cluster => self.ports[..6]
                .iter()
                .copied()
                .find(|&port| {
                    let role = cli(port, &["role"]);
                    // A node that does not hold the key answers MOVED instead of a count.
                    role.starts_with("master")
                        && matches!(cli(port, &["exists", key]).trim(), "0" | "1")
                })
                .unwrap_or_else(|| panic!("RedisDeployment: no master holds {key}")),
            Kind::Sentinel => self
                .sentinels_master()
                .unwrap_or_else(|| panic!("RedisDeployment: the Sentinels name no master")),
        }
    }

    /// The master's port as the first Sentinel names it.
    fn sentinels_master(&self) -> Option<u16> {
        let addr = cli(
            self.ports[2],
            &["sentinel", "get-master-addr-by-name", "cqrs"],
        );
        addr.lines()
            .nth(1)
            .and_then(|port| port.trim().parse().ok())
    }

    /// Whether another node has taken the place of the (killed) master on `port`: a replica
    /// promoted in its stead.
    fn replaced(&self, port: u16) -> bool {
        match self.kind {
            Kind::Cluster => {
                self.ports[..6]
                    .iter()
                    .filter(|&&other| other != port)
                    .filter(|&&other| cli(other, &["role"]).starts_with("master"))
                    .count()
                    >= 3
            }
            Kind::Sentinel => self.sentinels_master().is_some_and(|master| master != port),
        }
    }

    /// Kills the server on `port` at once (SIGKILL: no shutdown, nothing saved).
    pub fn kill(&self, port: u16) {
        let pidfile = self.dir.join(format!("{port}.pid"));
        let pid = std::fs::read_to_string(&pidfile)
            .unwrap_or_else(|e| panic!("RedisDeployment: {}: {e}", pidfile.display()));
        let status = Command::new("kill")
            .args(["-9", pid.trim()])
            .status()
            .unwrap_or_else(|e| panic!("RedisDeployment: kill: {e}"));
        assert!(status.success(), "RedisDeployment: kill {port} failed");
        let _ = std::fs::remove_file(pidfile);
    }

    /// Starts the server on `port` again as it was first started, once another node has
    /// taken its place (waiting up to a minute), so it comes back as that node's replica.
    /// Started sooner, a killed master would come back empty (nothing is persisted) and still
    /// a master, and its replica would copy the emptiness: every key lost.
    pub fn restart(&self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.replaced(port) {
            assert!(
                Instant::now() < deadline,
                "RedisDeployment: no node took the place of {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        self.script("restart", &[port]);
    }

    fn script(&self, verb: &str, ports: &[u16]) -> String {
        let out = Command::new("bash")
            .arg(SCRIPT)
            .arg(verb)
            .arg(&self.dir)
            .args(ports.iter().map(u16::to_string))
            .output()
            .unwrap_or_else(|e| panic!("RedisDeployment: {SCRIPT}: {e}"));
        assert!(
            out.status.success(),
            "RedisDeployment: {verb} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for RedisDeployment {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(SCRIPT)
            .arg("stop")
            .arg(&self.dir)
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("RedisDeployment: redis-cli: {e}"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `n` ports free now, each with its cluster bus port (+10000) free too.
fn spare_ports(n: usize) -> Vec<u16> {
    let mut ports = Vec::with_capacity(n);
    while ports.len() < n {
        let port = 20_000 + rand::random::<u16>() % 20_000;
        let free = |p: u16| TcpListener::bind(("127.0.0.1", p)).is_ok();
        if !ports.contains(&port) && free(port) && free(port + 10_000) {
            ports.push(port);
        }
    }
    ports
}
