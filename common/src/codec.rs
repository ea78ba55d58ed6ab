//! Serialization of messages and records, and the versioned frame envelope.
//!
//! Everything that crosses the network or reaches the disk is encoded by a [`Codec`]: a small
//! trait over a serde format, so the format can be swapped without touching any protocol.
//! [`Bincode`] (bincode 2.x in serde mode, pinned: bincode is unmaintained upstream and 3.0 on
//! crates.io is an empty crate) is the default; `Postcard` (feature `postcard`) is the second
//! implementation, kept so the two can be benchmarked against each other.
//!
//! # Limits
//!
//! Decoding never trusts a length prefix. [`Bincode`] decodes with a byte limit of
//! [`DECODE_BYTES_MAX`]: without it, bincode's standard configuration believes a 17-byte frame
//! that claims 2^34 elements and aborts the process trying to allocate them. `Postcard` reads
//! from a borrowed slice and lets serde cap pre-allocation, so a claimed length larger than the
//! input fails with an error.
//!
//! # Envelope
//!
//! A frame is a [`Header`] (protocol tag, wire version, sender, receiver) followed by the payload.
//! [`decode_frame`] decodes the header first and rejects a frame of another protocol or version
//! with a typed error before looking at the payload.

use bytes::Bytes;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::NodeId;

/// The most bytes a single decode may claim for allocations (64 MiB). Frames are further bounded
/// by the transport's maximum frame size; this bounds what a hostile length prefix can ask for.
pub const DECODE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Why a value could not be encoded or decoded.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum CodecError {
    /// The value could not be serialized.
    #[error("encode failed: {0}")]
    Encode(String),
    /// The bytes are not a valid encoding of the expected type.
    #[error("decode failed: {0}")]
    Decode(String),
    /// The bytes claim more memory than [`DECODE_BYTES_MAX`].
    #[error("decode refused: the input claims more than {limit} bytes")]
    LimitExceeded {
        /// The limit that was hit.
        limit: usize,
    },
    /// The frame belongs to another protocol.
    #[error("frame is for protocol {found}, this node speaks protocol {expected}")]
    WrongProtocol {
        /// The protocol this node speaks.
        expected: u16,
        /// The protocol named in the frame.
        found: u16,
    },
    /// The frame has another wire version.
    #[error("frame has wire version {found}, this node speaks version {expected}")]
    WrongVersion {
        /// The version this node speaks.
        expected: u16,
        /// The version named in the frame.
        found: u16,
    },
    /// Bytes were left over after the value.
    #[error("{0} trailing bytes after the value")]
    TrailingBytes(usize),
}

/// The capacity [`Codec::encode`] starts its buffer with, in bytes.
pub const ENCODE_CAPACITY_START: usize = 64;

/// A serde-based binary format. Implementations must be deterministic (the same value always
/// encodes to the same bytes) and must bound what decoding allocates.
pub trait Codec: Clone + Send + Sync + 'static {
    /// A short name for reports ("bincode", "postcard").
    const NAME: &'static str;

    /// Appends the encoding of `value` to `buf`.
    fn encode_into<T: Serialize + ?Sized>(
        &self,
        value: &T,
        buf: &mut Vec<u8>,
    ) -> Result<(), CodecError>;

    /// Decodes one value from the start of `bytes`, returning it and how many bytes it used.
    fn decode_prefix<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<(T, usize), CodecError>;

    /// Encodes `value` into a new buffer.
    fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<Vec<u8>, CodecError> {
        // Room for a typical small message (a client's put or its answer) from the start: an
        // empty buffer grew three or four times while one was written.
        let mut buf = Vec::with_capacity(ENCODE_CAPACITY_START);
        self.encode_into(value, &mut buf)?;
        Ok(buf)
    }

    /// Decodes exactly one value that fills all of `bytes`.
    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, CodecError> {
        let (value, used) = self.decode_prefix(bytes)?;
        if used != bytes.len() {
            return Err(CodecError::TrailingBytes(bytes.len() - used));
        }
        Ok(value)
    }
}

/// bincode 2 (serde mode, standard configuration: little endian, varint integers) with a decode
/// limit of [`DECODE_BYTES_MAX`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Bincode;

fn bincode_config() -> bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<DECODE_BYTES_MAX>,
> {
    bincode::config::standard().with_limit::<DECODE_BYTES_MAX>()
}

impl Codec for Bincode {
    const NAME: &'static str = "bincode";

    fn encode_into<T: Serialize + ?Sized>(
        &self,
        value: &T,
        buf: &mut Vec<u8>,
    ) -> Result<(), CodecError> {
        bincode::serde::encode_into_std_write(value, buf, bincode_config())
            .map(|_| ())
            .map_err(|e| CodecError::Encode(e.to_string()))
    }

    fn decode_prefix<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<(T, usize), CodecError> {
        bincode::serde::decode_from_slice(bytes, bincode_config()).map_err(|e| match e {
            bincode::error::DecodeError::LimitExceeded => CodecError::LimitExceeded {
                limit: DECODE_BYTES_MAX,
            },
            other => CodecError::Decode(other.to_string()),
        })
    }
}

/// postcard 1.x (varint integers, no schema), the second codec, for comparison.
#[cfg(feature = "postcard")]
#[cfg_attr(docsrs, doc(cfg(feature = "postcard")))]
#[derive(Clone, Copy, Debug, Default)]
pub struct Postcard;

#[cfg(feature = "postcard")]
impl Codec for Postcard {
    const NAME: &'static str = "postcard";

    fn encode_into<T: Serialize + ?Sized>(
        &self,
        value: &T,
        buf: &mut Vec<u8>,
    ) -> Result<(), CodecError> {
        // postcard takes the buffer by value; on an error the partial buffer is dropped.
        let taken = std::mem::take(buf);
        *buf = postcard::to_extend(value, taken).map_err(|e| CodecError::Encode(e.to_string()))?;
        Ok(())
    }

    fn decode_prefix<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<(T, usize), CodecError> {
        let (value, rest) =
            postcard::take_from_bytes(bytes).map_err(|e| CodecError::Decode(e.to_string()))?;
        Ok((value, bytes.len() - rest.len()))
    }
}

/// The first part of every frame: who sent it, to whom, in which protocol and version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Protocol tag ([`crate::protocol`]).
    pub protocol: u16,
    /// Wire version of the protocol's messages.
    pub version: u16,
    /// Sending node.
    pub from: NodeId,
    /// Receiving node.
    pub to: NodeId,
}

/// Encodes `header` followed by `payload` into one frame.
pub fn encode_frame<C: Codec, M: Serialize>(
    codec: &C,
    header: &Header,
    payload: &M,
) -> Result<Bytes, CodecError> {
    let mut buf = Vec::with_capacity(ENCODE_CAPACITY_START);
    codec.encode_into(header, &mut buf)?;
    codec.encode_into(payload, &mut buf)?;
    Ok(Bytes::from(buf))
}

/// Decodes a frame, rejecting it unless its header names `protocol` and `version`.
pub fn decode_frame<C: Codec, M: DeserializeOwned>(
    codec: &C,
    protocol: u16,
    version: u16,
    frame: &[u8],
) -> Result<(Header, M), CodecError> {
    let (header, used): (Header, usize) = codec.decode_prefix(frame)?;
    if header.protocol != protocol {
        return Err(CodecError::WrongProtocol {
            expected: protocol,
            found: header.protocol,
        });
    }
    if header.version != version {
        return Err(CodecError::WrongVersion {
            expected: version,
            found: header.version,
        });
    }
    let payload = codec.decode(&frame[used..])?;
    Ok((header, payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_length_prefix_is_refused_without_allocating() {
        // A length claiming 2^34 items in 17 bytes: varint tag 253 means a u64 length follows.
        let mut frame = vec![253u8];
        frame.extend_from_slice(&(1u64 << 34).to_le_bytes());
        frame.extend_from_slice(&[0u8; 8]);
        assert_eq!(frame.len(), 17);
        // A string is allocated from its claimed length: the limit refuses it up front.
        let limit = CodecError::LimitExceeded {
            limit: DECODE_BYTES_MAX,
        };
        assert_eq!(Bincode.decode::<String>(&frame).unwrap_err(), limit);
        // Sequences are read element by element (serde caps pre-allocation) and run out of input.
        for result in [
            Bincode.decode::<Vec<u64>>(&frame).map(|_| ()),
            Bincode.decode::<Vec<u8>>(&frame).map(|_| ()),
        ] {
            assert!(matches!(
                result,
                Err(CodecError::Decode(_) | CodecError::LimitExceeded { .. })
            ));
        }
    }

    #[test]
    fn frame_round_trip_and_rejections() {
        let h = Header {
            protocol: 9,
            version: 2,
            from: 1,
            to: 3,
        };
        let f = encode_frame(&Bincode, &h, &("hi".to_string(), 42u32)).unwrap();
        let (h2, m): (Header, (String, u32)) = decode_frame(&Bincode, 9, 2, &f).unwrap();
        assert_eq!(h2, h);
        assert_eq!(m, ("hi".to_string(), 42));
        assert_eq!(
            decode_frame::<_, (String, u32)>(&Bincode, 8, 2, &f).unwrap_err(),
            CodecError::WrongProtocol {
                expected: 8,
                found: 9
            }
        );
        assert_eq!(
            decode_frame::<_, (String, u32)>(&Bincode, 9, 3, &f).unwrap_err(),
            CodecError::WrongVersion {
                expected: 3,
                found: 2
            }
        );
        assert!(decode_frame::<_, (String, u32)>(&Bincode, 9, 2, &f[..f.len() - 1]).is_err());
    }
}
