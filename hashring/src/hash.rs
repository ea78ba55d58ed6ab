//! The pinned, portable hash every algorithm of this crate places keys with.
//!
//! Placement is only useful if every process computes the same answer: two routers that disagree
//! on where a key lives send reads to the wrong replica. So the hash is fixed, not "whatever the
//! standard library does today":
//!
//! * the algorithm is **XXH3, 64-bit** (`xxh3_64_with_seed` from the `xxhash-rust` crate), which
//!   is specified byte for byte and stable across platforms and releases;
//! * the seed is [`DEFAULT_SEED`] unless a caller picks another one;
//! * keys are turned into bytes by [`StableHash`], whose implementations use fixed-width
//!   little-endian encodings (never `usize`, never `std::hash::Hash`, whose output may change
//!   between Rust releases and is randomly seeded in `HashMap`).
//!
//! Derived values (virtual-node positions, rendezvous scores, Maglev permutations) hash a
//! 16-byte block `id_hash ‖ tag`, both little-endian `u64`, with the same seed; see
//! [`KeyHasher::hash_pair`]. The test suite commits vectors of all of these.

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// The default seed: the ASCII bytes of `"hashring"` read as a big-endian `u64`.
///
/// Changing it moves (almost) every key, so it is part of the crate's compatibility promise.
pub const DEFAULT_SEED: u64 = 0x6861_7368_7269_6e67;

/// XXH3-64 with a fixed seed: the one hash function of the crate.
///
/// It is `Copy` and two words of state-free configuration, so every structure keeps its own copy
/// and hashing never allocates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct KeyHasher {
    seed: u64,
}

impl Default for KeyHasher {
    fn default() -> Self {
        Self::with_seed(DEFAULT_SEED)
    }
}

impl KeyHasher {
    /// A hasher with a chosen seed. Every process that must agree on placement needs the same
    /// seed.
    pub const fn with_seed(seed: u64) -> Self {
        Self { seed }
    }

    /// The seed this hasher uses.
    pub const fn seed(&self) -> u64 {
        self.seed
    }

    /// XXH3-64 of `bytes` with this hasher's seed.
    #[inline]
    pub fn hash_bytes(&self, bytes: &[u8]) -> u64 {
        xxh3_64_with_seed(bytes, self.seed)
    }

    /// XXH3-64 of the 8 little-endian bytes of `value`.
    #[inline]
    pub fn hash_u64(&self, value: u64) -> u64 {
        self.hash_bytes(&value.to_le_bytes())
    }

    /// XXH3-64 of the 16 bytes `first ‖ second` (both little-endian): how virtual-node positions
    /// (`id_hash ‖ vnode index`), rendezvous scores (`key_hash ‖ id_hash`) and Maglev
    /// permutations (`id_hash ‖ tag`) are derived.
    #[inline]
    pub fn hash_pair(&self, first: u64, second: u64) -> u64 {
        let mut block = [0u8; 16];
        block[..8].copy_from_slice(&first.to_le_bytes());
        block[8..].copy_from_slice(&second.to_le_bytes());
        self.hash_bytes(&block)
    }

    /// The hash of any [`StableHash`] value.
    #[inline]
    pub fn hash<K: StableHash + ?Sized>(&self, key: &K) -> u64 {
        key.stable_hash(self)
    }
}

/// A value with a platform- and version-independent hash: keys and node ids implement it.
///
/// Implementations must feed a fixed byte encoding to the hasher (for example the
/// little-endian bytes of an integer, or the UTF-8 bytes of a string). Implementations for
/// integers hash their 8-byte little-endian widening (so `7u32` and `7u64` hash alike), strings
/// and byte slices hash their bytes. For a composite id, hash a canonical byte encoding of it,
/// or combine field hashes with [`KeyHasher::hash_pair`]:
///
/// ```
/// use hashring::{KeyHasher, StableHash};
///
/// #[derive(Clone, PartialEq, Eq, Hash, Debug)]
/// struct Server { rack: u32, host: String }
///
/// impl StableHash for Server {
///     fn stable_hash(&self, hasher: &KeyHasher) -> u64 {
///         hasher.hash_pair(hasher.hash_u64(u64::from(self.rack)), hasher.hash_bytes(self.host.as_bytes()))
///     }
/// }
/// let h = KeyHasher::default();
/// let a = Server { rack: 1, host: "db-1".into() };
/// assert_eq!(a.stable_hash(&h), a.clone().stable_hash(&h));
/// ```
pub trait StableHash {
    /// The 64-bit hash of `self` under `hasher`.
    fn stable_hash(&self, hasher: &KeyHasher) -> u64;
}

macro_rules! stable_hash_unsigned {
    ($($t:ty),*) => {$(
        impl StableHash for $t {
            #[inline]
            fn stable_hash(&self, hasher: &KeyHasher) -> u64 {
                hasher.hash_u64(u64::from(*self))
            }
        }
    )*};
}
stable_hash_unsigned!(u8, u16, u32, u64);

macro_rules! stable_hash_signed {
    ($($t:ty),*) => {$(
        impl StableHash for $t {
            #[inline]
            fn stable_hash(&self, hasher: &KeyHasher) -> u64 {
                // Two's-complement reinterpretation of the sign-extended value: -1i32 and -1i64
                // hash alike, as the unsigned widths do.
                hasher.hash_u64(i64::from(*self) as u64)
            }
        }
    )*};
}
stable_hash_signed!(i8, i16, i32, i64);

impl StableHash for u128 {
    fn stable_hash(&self, hasher: &KeyHasher) -> u64 {
        hasher.hash_bytes(&self.to_le_bytes())
    }
}

impl StableHash for str {
    #[inline]
    fn stable_hash(&self, hasher: &KeyHasher) -> u64 {
        hasher.hash_bytes(self.as_bytes())
    }
}

impl StableHash for String {
    #[inline]
    fn stable_hash(&self, hasher: &KeyHasher) -> u64 {
        hasher.hash_bytes(self.as_bytes())
    }
}

impl StableHash for [u8] {
    #[inline]
    fn stable_hash(&self, hasher: &KeyHasher) -> u64 {
        hasher.hash_bytes(self)
    }
}

impl StableHash for Vec<u8> {
    #[inline]
    fn stable_hash(&self, hasher: &KeyHasher) -> u64 {
        hasher.hash_bytes(self)
    }
}

impl<const LEN: usize> StableHash for [u8; LEN] {
    #[inline]
    fn stable_hash(&self, hasher: &KeyHasher) -> u64 {
        hasher.hash_bytes(self)
    }
}

impl<T: StableHash + ?Sized> StableHash for &T {
    #[inline]
    fn stable_hash(&self, hasher: &KeyHasher) -> u64 {
        (**self).stable_hash(hasher)
    }
}

impl StableHash for std::net::SocketAddr {
    fn stable_hash(&self, hasher: &KeyHasher) -> u64 {
        // Canonical text form ("10.0.0.1:7000", "[::1]:7000"): stable and human-checkable.
        hasher.hash_bytes(self.to_string().as_bytes())
    }
}
