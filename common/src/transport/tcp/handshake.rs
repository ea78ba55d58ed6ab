//! The connection handshake: the dialer proves it holds the cluster's shared key, then the
//! acceptor proves the same back.
//!
//! ```text
//! acceptor → dialer   Challenge { version, nonce_a }
//! dialer   → acceptor Hello     { version, cluster, from, to, nonce_d,
//!                                 mac = HMAC(key, DIALER ‖ nonce_a ‖ cluster ‖ from ‖ to) }
//! acceptor → dialer   Welcome   { mac = HMAC(key, ACCEPTOR ‖ nonce_d ‖ cluster ‖ to ‖ from) }
//! ```
//!
//! The acceptor's fresh random nonce makes a recorded `Hello` useless on another connection; the
//! two labels keep a MAC computed by one side from being reflected back as the other side's; the
//! length prefix on the cluster name makes the MAC input unambiguous. The acceptor checks the
//! cluster name, that `to` is itself, that `from` is one of its configured peers and the MAC
//! (in constant time, through [`Mac::verify_slice`]); the dialer checks the acceptor's MAC, so a
//! misconfigured address never leads a node to talk to the wrong peer. Every handshake message is
//! a length-delimited frame of at most [`HANDSHAKE_FRAME_BYTES_MAX`] bytes, and the whole
//! exchange is bounded by the configured handshake timeout.
//!
//! This authenticates the peers; it does not encrypt the frames that follow. A deployment across
//! an untrusted network would run the transport inside TLS (or a Noise channel) instead.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::codec::{Bincode, Codec};
use crate::NodeId;

type HmacSha256 = Hmac<Sha256>;

/// The handshake's version; a peer speaking another version is refused.
pub const HANDSHAKE_VERSION: u16 = 1;
/// Bytes of each side's random nonce.
pub const NONCE_BYTES: usize = 32;
/// The largest handshake message (cluster names are at most
/// [`CLUSTER_NAME_BYTES_MAX`](super::CLUSTER_NAME_BYTES_MAX) bytes, so honest messages are far
/// smaller).
pub const HANDSHAKE_FRAME_BYTES_MAX: usize = 512;

const LABEL_DIALER: &[u8] = b"distributed-protocols/tcp/dialer/v1";
const LABEL_ACCEPTOR: &[u8] = b"distributed-protocols/tcp/acceptor/v1";

/// First message, from the acceptor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Challenge {
    pub version: u16,
    pub nonce: [u8; NONCE_BYTES],
}

/// The dialer's answer: who it is and the proof.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Hello {
    pub version: u16,
    pub cluster: String,
    pub from: NodeId,
    pub to: NodeId,
    pub nonce: [u8; NONCE_BYTES],
    pub mac: [u8; 32],
}

/// The acceptor's proof; the connection is established once the dialer verified it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Welcome {
    pub mac: [u8; 32],
}

/// Why a handshake failed. Every variant is logged with the peer's address.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum HandshakeError {
    /// The exchange did not finish within the handshake timeout.
    #[error("handshake timed out")]
    Timeout,
    /// The TLS handshake failed (no certificate, one from another authority, not TLS at all).
    #[error("TLS handshake failed: {0}")]
    Tls(String),
    /// The connection closed during the handshake.
    #[error("connection closed during the handshake")]
    Closed,
    /// Reading or writing the socket failed (including a frame above the handshake limit).
    #[error("i/o error during the handshake: {0}")]
    Io(String),
    /// A message could not be decoded.
    #[error("malformed handshake message: {0}")]
    Malformed(String),
    /// The peer speaks another handshake version.
    #[error("handshake version {found}, expected {expected}")]
    Version {
        /// Ours.
        expected: u16,
        /// Theirs.
        found: u16,
    },
    /// The peer belongs to another cluster.
    #[error("peer claims cluster {found:?}, this node is in cluster {expected:?}")]
    WrongCluster {
        /// Ours.
        expected: String,
        /// Theirs.
        found: String,
    },
    /// The peer's id is not one of this node's configured peers.
    #[error("node {0} is not a configured peer")]
    UnknownNode(NodeId),
    /// The dialer meant to reach another node.
    #[error("peer addressed node {found}, this is node {expected}")]
    WrongTarget {
        /// This node.
        expected: NodeId,
        /// The node the peer wanted.
        found: NodeId,
    },
    /// The MAC does not verify: the peer does not hold the cluster key.
    #[error("authentication failed: the peer does not hold the cluster key")]
    BadMac,
    /// No randomness for the nonce.
    #[error("no random source for the nonce: {0}")]
    Random(String),
}

fn mac_for(
    key: &[u8],
    label: &[u8],
    nonce: &[u8; NONCE_BYTES],
    cluster: &str,
    from: NodeId,
    to: NodeId,
) -> Result<HmacSha256, HandshakeError> {
    // HMAC accepts keys of any length, so this only fails if that ever changes.
    let mut mac = HmacSha256::new_from_slice(key).map_err(|e| HandshakeError::Io(e.to_string()))?;
    mac.update(label);
    mac.update(nonce);
    mac.update(&(cluster.len() as u64).to_le_bytes());
    mac.update(cluster.as_bytes());
    mac.update(&from.to_le_bytes());
    mac.update(&to.to_le_bytes());
    Ok(mac)
}

/// A fresh random nonce from the operating system.
pub(crate) fn nonce() -> Result<[u8; NONCE_BYTES], HandshakeError> {
    let mut n = [0u8; NONCE_BYTES];
    getrandom::fill(&mut n).map_err(|e| HandshakeError::Random(e.to_string()))?;
    Ok(n)
}

/// The dialer's `Hello` answering `challenge`.
pub(crate) fn hello(
    key: &[u8],
    cluster: &str,
    from: NodeId,
    to: NodeId,
    challenge: &Challenge,
    nonce: [u8; NONCE_BYTES],
) -> Result<Hello, HandshakeError> {
    if challenge.version != HANDSHAKE_VERSION {
        return Err(HandshakeError::Version {
            expected: HANDSHAKE_VERSION,
            found: challenge.version,
        });
    }
    let mac = mac_for(key, LABEL_DIALER, &challenge.nonce, cluster, from, to)?;
    Ok(Hello {
        version: HANDSHAKE_VERSION,
        cluster: cluster.to_owned(),
        from,
        to,
        nonce,
        mac: mac.finalize().into_bytes().into(),
    })
}

/// The acceptor's checks of a `Hello`; on success, the authenticated peer id and the `Welcome`.
pub(crate) fn check_hello(
    key: &[u8],
    cluster: &str,
    me: NodeId,
    is_peer: impl Fn(NodeId) -> bool,
    challenge: &Challenge,
    hello: &Hello,
) -> Result<(NodeId, Welcome), HandshakeError> {
    if hello.version != HANDSHAKE_VERSION {
        return Err(HandshakeError::Version {
            expected: HANDSHAKE_VERSION,
            found: hello.version,
        });
    }
    if hello.cluster != cluster {
        return Err(HandshakeError::WrongCluster {
            expected: cluster.to_owned(),
            found: hello.cluster.clone(),
        });
    }
    if hello.to != me {
        return Err(HandshakeError::WrongTarget {
            expected: me,
            found: hello.to,
        });
    }
    if hello.from == me || !is_peer(hello.from) {
        return Err(HandshakeError::UnknownNode(hello.from));
    }
    mac_for(key, LABEL_DIALER, &challenge.nonce, cluster, hello.from, me)?
        .verify_slice(&hello.mac)
        .map_err(|_| HandshakeError::BadMac)?;
    let welcome = mac_for(key, LABEL_ACCEPTOR, &hello.nonce, cluster, me, hello.from)?;
    Ok((
        hello.from,
        Welcome {
            mac: welcome.finalize().into_bytes().into(),
        },
    ))
}

/// The dialer's check of the acceptor's `Welcome`.
pub(crate) fn check_welcome(
    key: &[u8],
    cluster: &str,
    me: NodeId,
    peer: NodeId,
    my_nonce: &[u8; NONCE_BYTES],
    welcome: &Welcome,
) -> Result<(), HandshakeError> {
    mac_for(key, LABEL_ACCEPTOR, my_nonce, cluster, peer, me)?
        .verify_slice(&welcome.mac)
        .map_err(|_| HandshakeError::BadMac)
}

/// Encodes a handshake message.
pub(crate) fn encode<T: Serialize>(msg: &T) -> Result<bytes::Bytes, HandshakeError> {
    Bincode
        .encode(msg)
        .map(bytes::Bytes::from)
        .map_err(|e| HandshakeError::Malformed(e.to_string()))
}

/// Decodes a handshake message (the frame is already bounded by [`HANDSHAKE_FRAME_BYTES_MAX`]).
pub(crate) fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, HandshakeError> {
    Bincode
        .decode(bytes)
        .map_err(|e| HandshakeError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn challenge() -> Challenge {
        Challenge {
            version: HANDSHAKE_VERSION,
            nonce: [7; NONCE_BYTES],
        }
    }

    /// Fuzzed handshake frames (random bytes, and edits of an honest `Hello`) are typed errors:
    /// decoding never panics, and no forged `Hello` passes the checks. `FUZZ_SECS=n` runs it
    /// longer.
    #[test]
    fn fuzzed_handshake_frames_are_errors_not_panics() {
        let c = challenge();
        let honest_hello = hello(KEY, "c", 2, 1, &c, [9; NONCE_BYTES]).unwrap();
        let honest = encode(&honest_hello).unwrap();
        let target = bolero::check!().with_type::<(Vec<u8>, Vec<(u16, u8)>)>();
        let target = match std::env::var("FUZZ_SECS").ok().and_then(|s| s.parse().ok()) {
            Some(secs) => target.with_test_time(std::time::Duration::from_secs(secs)),
            None => target.with_iterations(3_000),
        };
        target.for_each(|(random, flips): &(Vec<u8>, Vec<(u16, u8)>)| {
            let _ = decode::<Challenge>(random);
            let _ = decode::<Welcome>(random);
            let mut edited = honest.to_vec();
            for &(at, xor) in flips {
                let i = usize::from(at) % edited.len();
                edited[i] ^= xor;
            }
            for bytes in [&random[..], &edited[..]] {
                if let Ok(h) = decode::<Hello>(bytes) {
                    let verdict = check_hello(KEY, "c", 1, |id| id == 2, &c, &h);
                    // Only the honest message may pass, up to the dialer's own nonce: the MAC
                    // does not cover it by design (it is the challenge the Welcome answers, so
                    // a changed nonce fails the dialer's check of the Welcome instead).
                    if verdict.is_ok() {
                        let forged = Hello {
                            nonce: honest_hello.nonce,
                            ..h
                        };
                        assert_eq!(forged, honest_hello, "a forged Hello passed");
                    }
                }
            }
        });
    }

    #[test]
    fn honest_exchange_verifies_both_ways() {
        let c = challenge();
        let h = hello(KEY, "c", 2, 1, &c, [9; NONCE_BYTES]).unwrap();
        let (peer, w) = check_hello(KEY, "c", 1, |id| id == 2, &c, &h).unwrap();
        assert_eq!(peer, 2);
        check_welcome(KEY, "c", 2, 1, &[9; NONCE_BYTES], &w).unwrap();
        let back: Hello = decode(&encode(&h).unwrap()).unwrap();
        assert_eq!(back, h);
        assert!(encode(&h).unwrap().len() < HANDSHAKE_FRAME_BYTES_MAX);
    }

    #[test]
    fn every_lie_is_caught() {
        let c = challenge();
        let peers = |id| id == 2 || id == 3;
        let h = hello(b"another key of 32 bytes.........", "c", 2, 1, &c, [0; 32]).unwrap();
        assert_eq!(
            check_hello(KEY, "c", 1, peers, &c, &h),
            Err(HandshakeError::BadMac)
        );
        let h = hello(KEY, "other", 2, 1, &c, [0; 32]).unwrap();
        assert!(matches!(
            check_hello(KEY, "c", 1, peers, &c, &h),
            Err(HandshakeError::WrongCluster { .. })
        ));
        let h = hello(KEY, "c", 9, 1, &c, [0; 32]).unwrap();
        assert_eq!(
            check_hello(KEY, "c", 1, peers, &c, &h),
            Err(HandshakeError::UnknownNode(9))
        );
        let h = hello(KEY, "c", 2, 3, &c, [0; 32]).unwrap();
        assert!(matches!(
            check_hello(KEY, "c", 1, peers, &c, &h),
            Err(HandshakeError::WrongTarget { .. })
        ));
        // A Hello recorded on one connection does not verify against another nonce.
        let h = hello(KEY, "c", 2, 1, &c, [0; 32]).unwrap();
        let other = Challenge {
            nonce: [8; NONCE_BYTES],
            ..c.clone()
        };
        assert_eq!(
            check_hello(KEY, "c", 1, peers, &other, &h),
            Err(HandshakeError::BadMac)
        );
        // Claiming another id with a MAC computed for 2 fails.
        let mut forged = h.clone();
        forged.from = 3;
        assert_eq!(
            check_hello(KEY, "c", 1, peers, &c, &forged),
            Err(HandshakeError::BadMac)
        );
        // The acceptor's Welcome cannot be reflected as a Hello and vice versa.
        let (_, w) = check_hello(KEY, "c", 1, peers, &c, &h).unwrap();
        assert_eq!(
            check_welcome(KEY, "c", 2, 1, &[1; 32], &w),
            Err(HandshakeError::BadMac)
        );
        assert!(decode::<Hello>(b"garbage").is_err());
    }
}
