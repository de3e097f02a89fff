//! `REDIS_URL`: which Redis deployment the suite talks to.
//!
//! | form | deployment |
//! |---|---|
//! | `redis://[user:password@]host[:port][/db]` | one server (or a proxy in front of several) |
//! | `redis+sentinel://[user:password@]host[:port][,host[:port]…]/master-name[/db]` | the master a set of Sentinels names, found again after a failover (port default 26379; the credentials are the data nodes', the Sentinels are asked without) |
//! | `redis+cluster://[user:password@]host[:port][,host[:port]…]` | a Redis Cluster, from any of its nodes (port default 6379) |
//!
//! Any form takes `?replica_acks=N`: a write the suite relies on for security (a counted
//! failure, an ended session, a switched grant) is answered only after N replicas have it
//! (`WAIT`), so a failover cannot take it back. With Sentinel or Cluster, set it to 1.

use std::fmt;
use std::str::FromStr;

const SENTINEL_PORT: u16 = 26379;
const REDIS_PORT: u16 = 6379;

/// Where Redis is, and how sure a write must be before it counts.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisTarget {
    pub topology: Topology,
    /// Credentials of the data nodes.
    pub username: Option<String>,
    pub password: Option<String>,
    /// Replicas that must have a security-relevant write before it is answered.
    pub replica_acks: u32,
}

/// The three deployments.
#[derive(Clone, PartialEq, Eq)]
pub enum Topology {
    /// One server: the URL as the redis crate reads it (without `replica_acks`).
    Standalone { url: String },
    /// The master `master` that `sentinels` agree on, in database `db`.
    Sentinel {
        sentinels: Vec<(String, u16)>,
        master: String,
        db: i64,
    },
    /// A cluster, discovered from `nodes`.
    Cluster { nodes: Vec<(String, u16)> },
}

impl fmt::Debug for RedisTarget {
    // Never prints the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisTarget")
            .field("topology", &self.topology)
            .field("replica_acks", &self.replica_acks)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Topology {
    // A standalone URL may carry a password: only the kind is printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Topology::Standalone { .. } => f.write_str("Standalone"),
            Topology::Sentinel {
                sentinels,
                master,
                db,
            } => f
                .debug_struct("Sentinel")
                .field("sentinels", sentinels)
                .field("master", master)
                .field("db", db)
                .finish(),
            Topology::Cluster { nodes } => f.debug_struct("Cluster").field("nodes", nodes).finish(),
        }
    }
}

impl FromStr for RedisTarget {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, String> {
        let (scheme, rest) = raw
            .split_once("://")
            .ok_or("expected a URL such as redis://host:6379")?;
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut replica_acks = 0;
        let mut passed_on = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("replica_acks", n)) => {
                    replica_acks = n
                        .parse()
                        .map_err(|_| format!("replica_acks: expected a count, got {n:?}"))?;
                }
                _ => passed_on.push(pair),
            }
        }
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((userinfo, hosts)) => (Some(userinfo), hosts),
            None => (None, authority),
        };
        let (username, password) = credentials(userinfo)?;
        let topology = match scheme {
            "redis" => {
                let url = if passed_on.is_empty() {
                    format!("redis://{rest}")
                } else {
                    format!("redis://{rest}?{}", passed_on.join("&"))
                };
                redis::Client::open(url.as_str()).map_err(|e| e.to_string())?;
                Topology::Standalone { url }
            }
            "redis+sentinel" | "redis+cluster" if !passed_on.is_empty() => {
                return Err(format!(
                    "unknown parameter {:?} (only replica_acks)",
                    passed_on[0]
                ));
            }
            "redis+sentinel" => {
                let mut segments = path.split('/').filter(|s| !s.is_empty());
                let master = segments
                    .next()
                    .ok_or("redis+sentinel:// needs the master's name as its path")?
                    .to_owned();
                let db = match segments.next() {
                    Some(db) => db
                        .parse()
                        .map_err(|_| format!("database: expected a number, got {db:?}"))?,
                    None => 0,
                };
                Topology::Sentinel {
                    sentinels: host_list(hosts, SENTINEL_PORT)?,
                    master,
                    db,
                }
            }
            "redis+cluster" => {
                if !path.trim_matches('/').is_empty() {
                    return Err("a cluster has one database: give no path".to_owned());
                }
                Topology::Cluster {
                    nodes: host_list(hosts, REDIS_PORT)?,
                }
            }
            "rediss" | "rediss+sentinel" | "rediss+cluster" => {
                return Err("TLS to Redis is not built in: use a TLS proxy on loopback".to_owned());
            }
            other => {
                return Err(format!(
                    "unknown scheme {other:?}: expected redis://, redis+sentinel:// or redis+cluster://"
                ));
            }
        };
        Ok(RedisTarget {
            topology,
            username,
            password,
            replica_acks,
        })
    }
}

fn credentials(userinfo: Option<&str>) -> Result<(Option<String>, Option<String>), String> {
    let Some(userinfo) = userinfo else {
        return Ok((None, None));
    };
    let (user, password) = match userinfo.split_once(':') {
        Some((user, password)) => (user, Some(password)),
        None => (userinfo, None),
    };
    let decode = |s: &str| {
        percent_decode(s).ok_or_else(|| "credentials: invalid percent-encoding".to_owned())
    };
    let user = (!user.is_empty()).then(|| decode(user)).transpose()?;
    let password = password.filter(|p| !p.is_empty()).map(decode).transpose()?;
    Ok((user, password))
}

/// `%XX` escapes as in any URL's userinfo. Hand-written: ten lines, where the
/// `percent-encoding` crate would be one more dependency for one call.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn host_list(hosts: &str, default_port: u16) -> Result<Vec<(String, u16)>, String> {
    let list = hosts
        .split(',')
        .map(|host| {
            let (name, port) = if let Some(v6) = host.strip_prefix('[') {
                let (name, after) = v6
                    .split_once(']')
                    .ok_or_else(|| format!("{host:?}: unclosed ["))?;
                (name, after.strip_prefix(':'))
            } else {
                match host.rsplit_once(':') {
                    Some((name, port)) => (name, Some(port)),
                    None => (host, None),
                }
            };
            if name.is_empty() {
                return Err(format!("{host:?}: no host name"));
            }
            let port = match port {
                Some(port) => port
                    .parse()
                    .map_err(|_| format!("{host:?}: expected a port number"))?,
                None => default_port,
            };
            Ok((name.to_owned(), port))
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(list)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn standalone_keeps_the_url_without_replica_acks() {
        let t: RedisTarget = "redis://r:6380/2?replica_acks=1&protocol=resp3"
            .parse()
            .unwrap();
        assert_eq!(
            t.topology,
            Topology::Standalone {
                url: "redis://r:6380/2?protocol=resp3".into()
            }
        );
        assert_eq!(t.replica_acks, 1);
        let t: RedisTarget = "redis://127.0.0.1:6379".parse().unwrap();
        assert_eq!(t.replica_acks, 0);
    }

    #[test]
    fn sentinel_lists_hosts_master_and_db() {
        let t: RedisTarget = "redis+sentinel://:p%40ss@s1,s2:26380,[::1]:5/cqrs/3?replica_acks=1"
            .parse()
            .unwrap();
        assert_eq!(
            t.topology,
            Topology::Sentinel {
                sentinels: vec![
                    ("s1".into(), 26379),
                    ("s2".into(), 26380),
                    ("::1".into(), 5)
                ],
                master: "cqrs".into(),
                db: 3,
            }
        );
        assert_eq!(t.password.as_deref(), Some("p@ss"));
        assert_eq!(t.username, None);
        assert!(!format!("{t:?}").contains("p@ss"));
    }

    #[test]
    fn cluster_lists_nodes() {
        let t: RedisTarget = "redis+cluster://u:pw@a:7000,b".parse().unwrap();
        assert_eq!(
            t.topology,
            Topology::Cluster {
                nodes: vec![("a".into(), 7000), ("b".into(), 6379)]
            }
        );
        assert_eq!(t.username.as_deref(), Some("u"));
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        let err = |s: &str| s.parse::<RedisTarget>().unwrap_err();
        assert!(err("http://x").contains("unknown scheme"));
        assert!(err("redis+sentinel://s1").contains("master's name"));
        assert!(err("redis+cluster://a:x").contains("port"));
        assert!(err("redis+cluster://a/1").contains("one database"));
        assert!(err("redis+cluster://a?db=1").contains("unknown parameter"));
        assert!(err("redis://a?replica_acks=x").contains("replica_acks"));
        assert!(err("rediss://a").contains("TLS"));
        assert!(err("no-scheme").contains("expected a URL"));
    }
}
