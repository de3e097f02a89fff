//! Redis as the outage and store tests need it: a proxy that can be taken down, a connection
//! to nowhere, and a fixed instant for the stores (which are given the time).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, Utc};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A TCP proxy to Redis that can be taken down (connections cut, new ones refused) and
/// brought back, to watch the service fail closed and recover without a restart.
pub struct FlakyProxy {
    pub url: String,
    up: Arc<AtomicBool>,
    conns: Arc<std::sync::Mutex<Vec<JoinHandle<()>>>>,
}

impl FlakyProxy {
    pub async fn start(target_url: &str) -> FlakyProxy {
        let target = target_url
            .trim_start_matches("redis://")
            .trim_end_matches('/')
            .to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let conns: Arc<std::sync::Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (up2, conns2) = (Arc::clone(&up), Arc::clone(&conns));
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if !up2.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let target = target.clone();
                let handle = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                conns2.lock().unwrap().push(handle);
            }
        });
        FlakyProxy {
            url: format!("redis://{addr}"),
            up,
            conns,
        }
    }

    pub fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
        if !up {
            for handle in self.conns.lock().unwrap().drain(..) {
                handle.abort();
            }
        }
    }
}

/// A fixed instant for the Redis store tests, which are given the time rather than read it.
pub fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp_millis(1_800_000_000_000).unwrap()
}

/// A Redis connection to a port nothing listens on, to watch a store fail closed.
pub fn dead_redis() -> cqrs_redis::RedisConnection {
    let port = cqrs_testkit::free_port();
    cqrs_redis::RedisConnection::open_url(&format!("redis://127.0.0.1:{port}")).unwrap()
}
