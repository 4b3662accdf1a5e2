//! Accepting connections under a cap, with the socket options every connection gets.
//!
//! The cap is a semaphore permit taken *before* `accept`, as tokio's mini-redis does, rather than accepting
//! and closing what is over the cap. At the cap the server stops calling `accept`: new connections wait in
//! the kernel's listen backlog, where they cost the process nothing, and are served in arrival order as
//! soon as a slot frees; once the backlog is full the kernel drops further SYNs and clients back off on
//! their own. Accept-and-close would spend a syscall pair per refused connection (a busy loop under a
//! flood) and answer with a reset that well-behaved clients cannot tell from a crash. The permit travels
//! with the connection and is returned when it closes, which also lets [`Acceptor::closed`] wait for every
//! connection to end.
//!
//! The listeners are bound here too ([`listen`]), with a listen backlog deep enough for a flood of new
//! connections: with tokio's 128 the abuse suite's 5,000 half-open connections overflowed it, the kernel
//! dropped SYNs, and a normal client's connection took the 1 s SYN retry.
use std::{io, net::SocketAddr, sync::Arc, time::Duration};

use tokio::{
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
};

use crate::metrics::OpenConnection;

/// A listener that hands out at most `max_connections` open connections at a time.
pub struct Acceptor {
    listener: TcpListener,
    permits: Arc<Semaphore>,
    max_connections: u32,
    tcp_keepalive: Option<Duration>,
    /// The `protocol` label of the open-connections gauge.
    protocol: &'static str,
}

/// An accepted connection and its slot under the cap; dropping it frees the slot.
pub struct Accepted {
    pub stream: TcpStream,
    pub slot: Slot,
}

/// A connection's place under the cap, counted in `mobilenet_open_connections` while it is held.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    _open: OpenConnection,
}

impl Acceptor {
    /// `tcp_keepalive`: idle time before the kernel probes a silent peer (None: the OS default, usually
    /// off), so a peer that vanished without a FIN or RST does not hold its slot forever.
    pub fn new(
        listener: TcpListener,
        max_connections: u32,
        tcp_keepalive: Option<Duration>,
        protocol: &'static str,
    ) -> Acceptor {
        let max_connections = max_connections.max(1);
        Acceptor {
            listener,
            permits: Arc::new(Semaphore::new(max_connections as usize)),
            max_connections,
            tcp_keepalive,
            protocol,
        }
    }

    /// Waits for a free slot, then for a connection. Accept errors are logged and retried after a pause:
    /// running out of file descriptors (EMFILE) would otherwise make the loop spin.
    pub async fn accept(&self) -> Accepted {
        // The semaphore is never closed, so this cannot fail; if it ever were, waiting forever is the
        // safe reading (no connection over the cap).
        let slot = match self.permits.clone().acquire_owned().await {
            Ok(slot) => slot,
            Err(_) => std::future::pending().await,
        };
        loop {
            match self.listener.accept().await {
                Ok((stream, _)) => {
                    self.configure(&stream);
                    let slot = Slot {
                        _permit: slot,
                        _open: OpenConnection::start(self.protocol),
                    };
                    return Accepted { stream, slot };
                }
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed; retrying in 100 ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// TCP_NODELAY on every connection: answers are small writes that Nagle's algorithm would hold back
    /// until the client's delayed ACK (~40 ms), which would dominate the latency of a one-image request.
    fn configure(&self, stream: &TcpStream) {
        let _ = stream.set_nodelay(true);
        if let Some(idle) = self.tcp_keepalive {
            let keepalive = socket2::TcpKeepalive::new().with_time(idle);
            let _ = socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive);
        }
    }

    /// Resolves once every connection handed out has closed (all slots are back).
    pub async fn closed(&self) {
        let _ = self.permits.acquire_many(self.max_connections).await;
    }
}

/// Binds `addr` with a listen backlog of `backlog` (tokio's `TcpListener::bind` always asks for 128).
/// Must run inside the tokio runtime.
pub fn listen(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // As std and tokio do: a restarted server can bind while old connections linger in TIME_WAIT.
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog.min(i32::MAX as u32) as i32)?;
    TcpListener::from_std(socket.into())
}

/// Errors about one connection (it was reset before we accepted it), not about the listener.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}
