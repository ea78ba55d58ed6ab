//! Optional mutual TLS for the workspace's TCP links (the replica transport and the `kv` client
//! port), on rustls with the `ring` provider.
//!
//! A cluster has one certificate authority. Every replica (and every client, on a client port)
//! presents a certificate chain signed by it and checks the other side's chain against it, so
//! both ends are authenticated and the link is encrypted. The dialing side also checks that the
//! acceptor's certificate names [`TlsConfig::server_name`] (a DNS subject alternative name every
//! certificate of the cluster carries), so the same configuration works whatever address a peer
//! is dialed at. The transport's HMAC handshake still runs inside TLS: it proves the node id
//! and the cluster, which a certificate alone does not.
//!
//! ```no_run
//! use std::path::Path;
//! use common::transport::tls::TlsConfig;
//!
//! let tls = TlsConfig::from_pem_files(
//!     Path::new("/etc/kv/ca.pem"),
//!     Path::new("/etc/kv/node-1.pem"),
//!     Path::new("/etc/kv/node-1.key"),
//!     "kv.cluster",
//! )
//! .unwrap();
//! // Then: `TcpConfig { tls: Some(tls), .. }`.
//! ```

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Longest PEM file read (a CA bundle, a chain or a key), in bytes.
pub const PEM_FILE_BYTES_MAX: u64 = 1024 * 1024;

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read, or is too long.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// PEM text that holds no certificate or key, or does not parse.
    #[error("{0}")]
    Pem(String),
    /// rustls refused the material (a key that does not match the certificate, say).
    #[error("{0}")]
    Rustls(String),
}

/// Both sides of mutual TLS for one node: what it presents, whom it trusts, and the name it
/// expects acceptors to carry. Cheap to clone.
#[derive(Clone)]
pub struct TlsConfig {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    server_name: ServerName<'static>,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys stay out of logs.
        f.debug_struct("TlsConfig")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

/// Two configurations are equal when they share the same material (clones of one another).
impl PartialEq for TlsConfig {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.server, &other.server) && Arc::ptr_eq(&self.client, &other.client)
    }
}

impl Eq for TlsConfig {}

fn read_pem(path: &Path) -> Result<Vec<u8>, TlsError> {
    let fail = |reason: String| TlsError::File {
        path: path.display().to_string(),
        reason,
    };
    let len = std::fs::metadata(path)
        .map_err(|e| fail(e.to_string()))?
        .len();
    if len > PEM_FILE_BYTES_MAX {
        return Err(fail(format!("longer than {PEM_FILE_BYTES_MAX} bytes")));
    }
    std::fs::read(path).map_err(|e| fail(e.to_string()))
}

fn certificates(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem(format!("{what}: {e}")))?;
    if certs.is_empty() {
        return Err(TlsError::Pem(format!(
            "{what}: no certificate in the PEM text"
        )));
    }
    Ok(certs)
}

impl TlsConfig {
    /// From PEM files: the cluster's CA certificate(s), this node's certificate chain, and its
    /// private key. `server_name` is the DNS name every certificate of the cluster carries.
    pub fn from_pem_files(
        ca: &Path,
        cert: &Path,
        key: &Path,
        server_name: &str,
    ) -> Result<Self, TlsError> {
        Self::from_pem(
            &read_pem(ca)?,
            &read_pem(cert)?,
            &read_pem(key)?,
            server_name,
        )
    }

    /// [`TlsConfig::from_pem_files`] from PEM text.
    pub fn from_pem(
        ca: &[u8],
        cert: &[u8],
        key: &[u8],
        server_name: &str,
    ) -> Result<Self, TlsError> {
        // rustls marks its ring provider deprecated because ring has no post-quantum key
        // exchange. It is used here because it builds with a C compiler alone; moving to the
        // aws-lc-rs provider is this one line (and the crate features).
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        for ca_cert in certificates(ca, "CA")? {
            roots
                .add(ca_cert)
                .map_err(|e| TlsError::Rustls(format!("CA certificate: {e}")))?;
        }
        let roots = Arc::new(roots);
        let chain = certificates(cert, "certificate")?;
        let key = PrivateKeyDer::from_pem_slice(key)
            .map_err(|e| TlsError::Pem(format!("private key: {e}")))?;
        let rustls_err = |what: &str, e: rustls::Error| TlsError::Rustls(format!("{what}: {e}"));
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::clone(&roots), Arc::clone(&provider))
                .build()
                .map_err(|e| TlsError::Rustls(format!("client verifier: {e}")))?;
        let server = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| rustls_err("protocol versions", e))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| rustls_err("certificate and key", e))?;
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| rustls_err("protocol versions", e))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| rustls_err("certificate and key", e))?;
        let server_name = ServerName::try_from(server_name.to_string())
            .map_err(|e| TlsError::Pem(format!("server name `{server_name}`: {e}")))?;
        Ok(Self {
            server: Arc::new(server),
            client: Arc::new(client),
            server_name,
        })
    }

    /// The name acceptors' certificates must carry.
    pub fn server_name(&self) -> &ServerName<'static> {
        &self.server_name
    }

    /// Runs the accepting side's handshake over `io` (the caller bounds it in time).
    pub async fn accept<IO>(&self, io: IO) -> io::Result<tokio_rustls::server::TlsStream<IO>>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        tokio_rustls::TlsAcceptor::from(Arc::clone(&self.server))
            .accept(io)
            .await
    }

    /// Runs the dialing side's handshake over `io` (the caller bounds it in time).
    pub async fn connect<IO>(&self, io: IO) -> io::Result<tokio_rustls::client::TlsStream<IO>>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        tokio_rustls::TlsConnector::from(Arc::clone(&self.client))
            .connect(self.server_name.clone(), io)
            .await
    }
}

/// A TLS stream over a connection's two halves, as the transport's socket layer hands them out.
type Secured<R, W> = tokio_rustls::TlsStream<tokio::io::Join<R, W>>;

/// The reading half of a connection, plain or inside TLS. An enum rather than a boxed trait
/// object, so the plain path stays free of virtual calls (see [`super::tcp::sockets`]).
pub enum MaybeTlsRead<R, W> {
    /// No TLS.
    Plain(R),
    /// Inside TLS.
    Tls(tokio::io::ReadHalf<Secured<R, W>>),
}

/// The writing half of a connection, plain or inside TLS.
pub enum MaybeTlsWrite<R, W> {
    /// No TLS.
    Plain(W),
    /// Inside TLS.
    Tls(tokio::io::WriteHalf<Secured<R, W>>),
}

/// Secures a connection's halves with `tls` when it is set (`dialing`: as the client side),
/// or passes them through.
pub async fn secure<R, W>(
    tls: Option<&TlsConfig>,
    read: R,
    write: W,
    dialing: bool,
) -> io::Result<(MaybeTlsRead<R, W>, MaybeTlsWrite<R, W>)>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let Some(tls) = tls else {
        return Ok((MaybeTlsRead::Plain(read), MaybeTlsWrite::Plain(write)));
    };
    let joined = tokio::io::join(read, write);
    let stream: Secured<R, W> = if dialing {
        tokio_rustls::TlsStream::Client(tls.connect(joined).await?)
    } else {
        tokio_rustls::TlsStream::Server(tls.accept(joined).await?)
    };
    let (r, w) = tokio::io::split(stream);
    Ok((MaybeTlsRead::Tls(r), MaybeTlsWrite::Tls(w)))
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> AsyncRead for MaybeTlsRead<R, W> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTlsRead::Plain(r) => Pin::new(r).poll_read(cx, buf),
            MaybeTlsRead::Tls(r) => Pin::new(r).poll_read(cx, buf),
        }
    }
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> AsyncWrite for MaybeTlsWrite<R, W> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTlsWrite::Plain(w) => Pin::new(w).poll_write(cx, buf),
            MaybeTlsWrite::Tls(w) => Pin::new(w).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTlsWrite::Plain(w) => Pin::new(w).poll_flush(cx),
            MaybeTlsWrite::Tls(w) => Pin::new(w).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTlsWrite::Plain(w) => Pin::new(w).poll_shutdown(cx),
            MaybeTlsWrite::Tls(w) => Pin::new(w).poll_shutdown(cx),
        }
    }
}

/// Test material: a CA and certificates it signs, made with `rcgen` (tests only).
#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing {
    /// A certificate authority that signs certificates naming one server name.
    pub struct TestCa {
        ca: rcgen::CertifiedKey,
        /// The CA certificate, PEM.
        pub ca_pem: String,
    }

    impl TestCa {
        /// A fresh CA.
        pub fn new() -> Self {
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
                .unwrap_or_else(|e| panic!("CA parameters: {e}"));
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, "test cluster CA");
            let key = rcgen::KeyPair::generate().unwrap_or_else(|e| panic!("CA key: {e}"));
            let cert = params
                .self_signed(&key)
                .unwrap_or_else(|e| panic!("CA certificate: {e}"));
            let ca_pem = cert.pem();
            Self {
                ca: rcgen::CertifiedKey {
                    cert,
                    key_pair: key,
                },
                ca_pem,
            }
        }

        /// A certificate for `name` signed by this CA: `(certificate PEM, key PEM)`.
        pub fn issue(&self, name: &str) -> (String, String) {
            let params = rcgen::CertificateParams::new(vec![name.to_string()])
                .unwrap_or_else(|e| panic!("parameters: {e}"));
            let key = rcgen::KeyPair::generate().unwrap_or_else(|e| panic!("key: {e}"));
            let cert = params
                .signed_by(&key, &self.ca.cert, &self.ca.key_pair)
                .unwrap_or_else(|e| panic!("certificate: {e}"));
            (cert.pem(), key.serialize_pem())
        }

        /// A node's [`super::TlsConfig`] with a fresh certificate naming `name`.
        pub fn config(&self, name: &str) -> super::TlsConfig {
            let (cert, key) = self.issue(name);
            super::TlsConfig::from_pem(
                self.ca_pem.as_bytes(),
                cert.as_bytes(),
                key.as_bytes(),
                name,
            )
            .unwrap_or_else(|e| panic!("TLS configuration: {e}"))
        }
    }

    impl Default for TestCa {
        fn default() -> Self {
            Self::new()
        }
    }
}
