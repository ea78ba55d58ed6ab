//! The one error type of the crate: why a benchmark, a chart or a trace export could not run.

use common::driver::DriverError;
use common::transport::TransportError;
use common::StorageError;

/// Why a benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The driver refused or failed.
    #[error("driver: {0}")]
    Driver(#[from] DriverError),
    /// A transport could not be set up.
    #[error("transport: {0}")]
    Transport(#[from] TransportError),
    /// Storage could not be set up.
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    /// An operation was answered with a failure by the protocol.
    #[error("operation failed: {0}")]
    Op(String),
    /// The cluster did not become ready (no leader, ...).
    #[error("cluster not ready: {0}")]
    NotReady(String),
    /// The requested run is invalid.
    #[error("invalid run: {0}")]
    Invalid(String),
    /// An operating-system error (temporary directory, socket).
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// A simulator trace does not hold together (an arrival without its send), or could not be
    /// written out.
    #[error("trace: {0}")]
    Trace(String),
}
