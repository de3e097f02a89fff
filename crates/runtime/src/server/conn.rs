//! Accepted connections: at most so many at once, and each one the server can cut once the
//! shutdown grace period is over.
//!
//! tonic's graceful shutdown waits for every connection to finish, however long that takes (a
//! health `Watch` stream never does). Wrapping each socket lets the server fail its I/O after
//! the grace period, which ends the connection task and lets shutdown complete.
//!
//! The bound is a semaphore taken before `accept` (as tokio's mini-redis does) and held by the
//! connection until it is dropped: past it, new connections wait in the kernel's listen queue,
//! where they cost the service no memory, instead of each holding HTTP/2 buffers here.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::metrics::UpDownCounter;

/// How often, at most, a full house of connections is logged.
const FULL_WARNING_EVERY: Duration = Duration::from_secs(60);

/// Connections from `listener`, at most `max` open at once; each is cut when `kill` flips to
/// true. Accept errors are passed on, as tonic expects (it logs them and goes on).
pub(crate) fn bounded_incoming(
    listener: TcpListener,
    max: usize,
    kill: watch::Receiver<bool>,
) -> impl Stream<Item = io::Result<KillableConn>> {
    let open = Arc::new(Semaphore::new(max));
    let warned: Option<Instant> = None;
    futures::stream::unfold(
        (listener, open, kill, warned),
        move |(listener, open, kill, mut warned)| async move {
            let permit = match Arc::clone(&open).try_acquire_owned() {
                Ok(permit) => permit,
                Err(_) => {
                    if warned.is_none_or(|at| at.elapsed() >= FULL_WARNING_EVERY) {
                        tracing::warn!(
                            max_connections = max,
                            "every connection place is taken: new connections wait until one \
                             closes (CQRS_MAX_CONNECTIONS)"
                        );
                        warned = Some(Instant::now());
                    }
                    // The semaphore is never closed, so this wait only ends with a permit.
                    Arc::clone(&open).acquire_owned().await.ok()?
                }
            };
            let accepted = listener.accept().await.map(|(stream, _)| {
                // Small unary messages would otherwise wait on Nagle's algorithm.
                let _ = stream.set_nodelay(true);
                KillableConn::new(stream, kill.clone(), permit)
            });
            Some((accepted, (listener, open, kill, warned)))
        },
    )
}

/// Connections being served (a gauge operators compare with `CQRS_MAX_CONNECTIONS`).
fn open_connections() -> &'static UpDownCounter<i64> {
    static OPEN: OnceLock<UpDownCounter<i64>> = OnceLock::new();
    OPEN.get_or_init(|| {
        crate::metrics::up_down(
            "rpc.server.connections",
            "Connections being served; more wait unserved at CQRS_MAX_CONNECTIONS",
        )
    })
}

pub(crate) struct KillableConn {
    io: TcpStream,
    killed: Pin<Box<dyn Future<Output = ()> + Send>>,
    dead: bool,
    /// This connection's place among those served at once, freed when it is dropped.
    _open: OwnedSemaphorePermit,
}

impl KillableConn {
    /// `kill` flips to true (or its sender is dropped) when the connection must end.
    fn new(io: TcpStream, mut kill: watch::Receiver<bool>, open: OwnedSemaphorePermit) -> Self {
        open_connections().add(1, &[]);
        KillableConn {
            io,
            killed: Box::pin(async move {
                let _ = kill.wait_for(|killed| *killed).await;
            }),
            dead: false,
            _open: open,
        }
    }

    /// Also registers the waker, so a connection blocked in read or write is woken by the kill.
    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if !self.dead && self.killed.as_mut().poll(cx).is_ready() {
            self.dead = true;
        }
        if self.dead {
            Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "server shut down",
            ))
        } else {
            Ok(())
        }
    }
}

impl Drop for KillableConn {
    fn drop(&mut self) {
        open_connections().add(-1, &[]);
    }
}

impl AsyncRead for KillableConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Err(e) = this.check(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for KillableConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Err(e) = this.check(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Err(e) = this.check(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Err(e) = this.check(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

impl Connected for KillableConn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}
