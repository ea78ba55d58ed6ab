//! The socket layer under the TCP transport, swappable so the same transport code runs over real
//! sockets ([`TokioSockets`]) and over turmoil's simulated network (`TurmoilSockets`, feature
//! `turmoil`).
//!
//! The transport is generic over [`Sockets`] rather than holding a `dyn` object: the choice is
//! made at compile time, so the real path pays nothing for the seam (no boxing, no virtual calls).

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncWrite};

/// Binds listeners, accepts and opens connections. Implemented by marker types; every method is
/// an associated function so the transport stores no socket-layer state.
pub trait Sockets: Send + Sync + 'static {
    /// A bound listening socket.
    type Listener: Send + Sync + 'static;
    /// The reading half of a connection.
    type ReadHalf: AsyncRead + Unpin + Send + 'static;
    /// The writing half of a connection.
    type WriteHalf: AsyncWrite + Unpin + Send + 'static;

    /// Binds a listener to `addr` (port 0 picks a free port; see [`Sockets::local_addr`]).
    fn bind(addr: SocketAddr) -> impl Future<Output = io::Result<Self::Listener>> + Send;

    /// The address the listener is bound to.
    fn local_addr(listener: &Self::Listener) -> io::Result<SocketAddr>;

    /// Waits for the next inbound connection.
    fn accept(
        listener: &Self::Listener,
    ) -> impl Future<Output = io::Result<(Self::ReadHalf, Self::WriteHalf, SocketAddr)>> + Send;

    /// Opens a connection to `addr`.
    fn connect(
        addr: SocketAddr,
    ) -> impl Future<Output = io::Result<(Self::ReadHalf, Self::WriteHalf)>> + Send;
}

/// Real TCP sockets from tokio. Connections have Nagle's algorithm disabled: the transport
/// batches frames itself and flushes once per batch, so waiting for more bytes only adds latency.
#[derive(Clone, Copy, Debug, Default)]
pub struct TokioSockets;

impl Sockets for TokioSockets {
    type Listener = tokio::net::TcpListener;
    type ReadHalf = tokio::net::tcp::OwnedReadHalf;
    type WriteHalf = tokio::net::tcp::OwnedWriteHalf;

    fn bind(addr: SocketAddr) -> impl Future<Output = io::Result<Self::Listener>> + Send {
        tokio::net::TcpListener::bind(addr)
    }

    fn local_addr(listener: &Self::Listener) -> io::Result<SocketAddr> {
        listener.local_addr()
    }

    async fn accept(
        listener: &Self::Listener,
    ) -> io::Result<(Self::ReadHalf, Self::WriteHalf, SocketAddr)> {
        let (stream, addr) = listener.accept().await?;
        stream.set_nodelay(true)?;
        let (r, w) = stream.into_split();
        Ok((r, w, addr))
    }

    async fn connect(addr: SocketAddr) -> io::Result<(Self::ReadHalf, Self::WriteHalf)> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(stream.into_split())
    }
}

/// turmoil's simulated TCP: hosts, latency, partitions and crashes on one thread from a seed.
/// Addresses are the simulated hosts' (`turmoil::lookup("name")`).
#[cfg(feature = "turmoil")]
#[cfg_attr(docsrs, doc(cfg(feature = "turmoil")))]
#[derive(Clone, Copy, Debug, Default)]
pub struct TurmoilSockets;

#[cfg(feature = "turmoil")]
impl Sockets for TurmoilSockets {
    type Listener = turmoil::net::TcpListener;
    type ReadHalf = turmoil::net::tcp::OwnedReadHalf;
    type WriteHalf = turmoil::net::tcp::OwnedWriteHalf;

    fn bind(addr: SocketAddr) -> impl Future<Output = io::Result<Self::Listener>> + Send {
        turmoil::net::TcpListener::bind(addr)
    }

    fn local_addr(listener: &Self::Listener) -> io::Result<SocketAddr> {
        listener.local_addr()
    }

    async fn accept(
        listener: &Self::Listener,
    ) -> io::Result<(Self::ReadHalf, Self::WriteHalf, SocketAddr)> {
        let (stream, addr) = listener.accept().await?;
        let (r, w) = stream.into_split();
        Ok((r, w, addr))
    }

    async fn connect(addr: SocketAddr) -> io::Result<(Self::ReadHalf, Self::WriteHalf)> {
        let stream = turmoil::net::TcpStream::connect(addr).await?;
        Ok(stream.into_split())
    }
}
