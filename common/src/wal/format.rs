//! The on-disk byte layout of segments and frames, and the parser that reads them.
//!
//! Pure functions over byte slices: no file system here, so every damaged-input case is testable
//! with plain vectors. The layout itself is documented in the [module docs](super).
//!
//! The framing is written by hand rather than with a codec crate because the recovery rule needs
//! more than "decode the next frame": it must tell a frame whose *header* is damaged (boundaries
//! unknown) from one whose *payload* is damaged (the next boundary is known), and search the rest
//! of a file for intact frames. That distinction is the WAL's own craft.

/// Magic bytes at the start of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"DPWALSEG";
/// Version of the segment format written by this code.
pub const SEGMENT_VERSION: u32 = 1;
/// Size of a segment header: magic (8), version (4), segment number (8), CRC32C (4).
pub const SEGMENT_HEADER_BYTES: usize = 24;
/// Size of a frame header: length (4), kind (1), payload CRC32C (4), header CRC32C (4).
pub const FRAME_HEADER_BYTES: usize = 13;

/// What a frame holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameKind {
    /// An ordinary record.
    Record = 1,
    /// A checkpoint: recovery starts from the latest one.
    Checkpoint = 2,
}

impl FrameKind {
    fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(FrameKind::Record),
            2 => Some(FrameKind::Checkpoint),
            _ => None,
        }
    }
}

/// The header of segment `seq`.
pub fn segment_header(seq: u64) -> [u8; SEGMENT_HEADER_BYTES] {
    let mut h = [0u8; SEGMENT_HEADER_BYTES];
    h[0..8].copy_from_slice(&SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
    h[12..20].copy_from_slice(&seq.to_le_bytes());
    let crc = crc32c::crc32c(&h[0..20]);
    h[20..24].copy_from_slice(&crc.to_le_bytes());
    h
}

/// How a segment header failed to parse.
#[derive(Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// Too short or failing its checksum: possibly a segment whose creation was interrupted.
    Torn(String),
    /// Intact (checksum matches) but not what it must be: never the result of a torn write.
    Invalid(String),
}

/// Parses a segment header and returns its segment number.
pub fn parse_segment_header(bytes: &[u8]) -> Result<u64, HeaderError> {
    if bytes.len() < SEGMENT_HEADER_BYTES {
        return Err(HeaderError::Torn(format!(
            "segment header is {} bytes, expected {SEGMENT_HEADER_BYTES}",
            bytes.len()
        )));
    }
    let crc = read_u32(bytes, 20);
    if crc32c::crc32c(&bytes[0..20]) != crc {
        return Err(HeaderError::Torn("segment header checksum mismatch".into()));
    }
    if bytes[0..8] != SEGMENT_MAGIC {
        return Err(HeaderError::Invalid(
            "not a segment file (bad magic)".into(),
        ));
    }
    let version = read_u32(bytes, 8);
    if version != SEGMENT_VERSION {
        return Err(HeaderError::Invalid(format!(
            "segment format version {version}, this code reads version {SEGMENT_VERSION}"
        )));
    }
    Ok(read_u64(bytes, 12))
}

/// Appends the frame of `payload` to `out`. The caller has checked `payload.len()` against the
/// configured maximum, which is at most `u32::MAX`.
pub fn encode_frame(kind: FrameKind, payload: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let mut h = [0u8; FRAME_HEADER_BYTES];
    h[0..4].copy_from_slice(&len.to_le_bytes());
    h[4] = kind as u8;
    h[5..9].copy_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    let head_crc = crc32c::crc32c(&h[0..9]);
    h[9..13].copy_from_slice(&head_crc.to_le_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(payload);
}

/// The result of parsing the frame at one offset of a segment.
#[derive(Debug, PartialEq, Eq)]
pub enum Parse<'a> {
    /// An intact frame; the next one starts at `next`.
    Frame {
        /// Record or checkpoint.
        kind: FrameKind,
        /// The record's bytes.
        payload: &'a [u8],
        /// Offset of the following frame.
        next: usize,
    },
    /// The offset is the end of the data: a clean end.
    End,
    /// The data ends inside this frame (a partial header, or an intact header whose payload runs
    /// past the end). Nothing can follow it: a torn tail if it is in the last segment.
    Truncated(String),
    /// The header fails its checksum: the frame's length is unknown, so the next frame boundary
    /// is too.
    BadHeader(String),
    /// The header is intact but the payload fails its checksum; the next frame, if any, would
    /// start at `next`.
    BadPayload {
        /// What is wrong.
        reason: String,
        /// Offset after the damaged frame.
        next: usize,
    },
    /// The header is intact yet impossible (unknown kind, length over the limit). A torn write
    /// cannot produce an intact header, so this is corruption (or a file written with other
    /// limits), wherever it is.
    Invalid(String),
}

/// Parses the frame starting at `at` in `data`, refusing lengths over `record_bytes_max` before
/// looking at the payload (so a damaged length can never make a reader allocate or read far).
pub fn parse_frame(data: &[u8], at: usize, record_bytes_max: usize) -> Parse<'_> {
    let rest = data.len().saturating_sub(at);
    if rest == 0 {
        return Parse::End;
    }
    if rest < FRAME_HEADER_BYTES {
        return Parse::Truncated(format!(
            "partial frame header ({rest} of {FRAME_HEADER_BYTES} bytes)"
        ));
    }
    let h = &data[at..at + FRAME_HEADER_BYTES];
    if crc32c::crc32c(&h[0..9]) != read_u32(h, 9) {
        return Parse::BadHeader("frame header checksum mismatch".into());
    }
    let len = read_u32(h, 0) as usize;
    let Some(kind) = FrameKind::from_byte(h[4]) else {
        return Parse::Invalid(format!("unknown frame kind {}", h[4]));
    };
    if len > record_bytes_max {
        return Parse::Invalid(format!(
            "frame claims {len} bytes, over record_bytes_max {record_bytes_max} \
             (written with a larger limit?)"
        ));
    }
    let start = at + FRAME_HEADER_BYTES;
    let next = start + len;
    if next > data.len() {
        return Parse::Truncated(format!(
            "frame of {len} bytes runs {} bytes past the end of the file",
            next - data.len()
        ));
    }
    let payload = &data[start..next];
    if crc32c::crc32c(payload) != read_u32(h, 5) {
        return Parse::BadPayload {
            reason: "payload checksum mismatch".into(),
            next,
        };
    }
    Parse::Frame {
        kind,
        payload,
        next,
    }
}

/// The first offset at or after `from` where an intact frame starts, if any. Used after a damaged
/// frame in the last segment to tell a torn tail (nothing intact follows) from damage in the
/// middle of the log. Linear in the bytes searched: the header checksum rejects almost every
/// offset after hashing 9 bytes, and only a header that passes gets its payload checked.
pub fn find_intact_frame(data: &[u8], from: usize, record_bytes_max: usize) -> Option<usize> {
    (from..data.len())
        .find(|&at| matches!(parse_frame(data, at, record_bytes_max), Parse::Frame { .. }))
}

fn read_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn read_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(payloads: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in payloads {
            encode_frame(FrameKind::Record, p, &mut out);
        }
        out
    }

    #[test]
    fn frame_round_trip_and_kinds() {
        let mut data = Vec::new();
        encode_frame(FrameKind::Checkpoint, b"ck", &mut data);
        encode_frame(FrameKind::Record, b"", &mut data);
        let Parse::Frame {
            kind,
            payload,
            next,
        } = parse_frame(&data, 0, 100)
        else {
            panic!("first frame");
        };
        assert_eq!((kind, payload), (FrameKind::Checkpoint, &b"ck"[..]));
        assert_eq!(next, FRAME_HEADER_BYTES + 2);
        assert!(matches!(
            parse_frame(&data, next, 100),
            Parse::Frame { kind: FrameKind::Record, payload: b"", next: n } if n == data.len()
        ));
        assert_eq!(parse_frame(&data, data.len(), 100), Parse::End);
    }

    #[test]
    fn every_cut_is_truncated_or_bad() {
        let data = frames(&[b"hello world"]);
        for cut in 1..data.len() {
            let p = parse_frame(&data[..cut], 0, 100);
            assert!(matches!(p, Parse::Truncated(_)), "cut {cut}: {p:?}");
        }
    }

    #[test]
    fn huge_length_is_refused_before_reading() {
        let mut data = frames(&[b"x"]);
        // Forge an intact header claiming 4 GiB.
        data[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        let crc = crc32c::crc32c(&data[0..9]);
        data[9..13].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(parse_frame(&data, 0, 1 << 20), Parse::Invalid(_)));
    }

    #[test]
    fn damage_is_classified() {
        let data = frames(&[b"abc", b"def"]);
        let mut bad_head = data.clone();
        bad_head[0] ^= 1;
        assert!(matches!(
            parse_frame(&bad_head, 0, 100),
            Parse::BadHeader(_)
        ));
        let mut bad_payload = data.clone();
        bad_payload[FRAME_HEADER_BYTES] ^= 1;
        assert!(matches!(
            parse_frame(&bad_payload, 0, 100),
            Parse::BadPayload { next, .. } if next == FRAME_HEADER_BYTES + 3
        ));
        assert_eq!(
            find_intact_frame(&bad_head, 1, 100),
            Some(FRAME_HEADER_BYTES + 3)
        );
        assert_eq!(find_intact_frame(&[0u8; 64], 0, 100), None);
    }

    #[test]
    fn segment_header_round_trip_and_damage() {
        let h = segment_header(42);
        assert_eq!(parse_segment_header(&h), Ok(42));
        assert!(matches!(
            parse_segment_header(&h[..10]),
            Err(HeaderError::Torn(_))
        ));
        let mut bad = h;
        bad[13] ^= 1;
        assert!(matches!(
            parse_segment_header(&bad),
            Err(HeaderError::Torn(_))
        ));
    }
}
