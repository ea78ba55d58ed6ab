//! The crate's one error type.

/// Why a ring, a membership or an algorithm refused an input.
///
/// Every constructor and mutator validates first and changes nothing when it returns an error,
/// so a rejected input never leaves a half-updated ring behind.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// A weight was zero, negative, NaN or infinite. Weights must be finite and positive.
    #[error("invalid weight {weight}: weights must be finite and greater than zero")]
    InvalidWeight {
        /// The rejected weight.
        weight: f64,
    },
    /// A weight was valid but so small that it maps to zero virtual nodes.
    #[error("weight {weight} gives zero virtual nodes at {vnodes_per_weight} virtual nodes per unit of weight")]
    WeightTooSmall {
        /// The rejected weight.
        weight: f64,
        /// The ring's virtual nodes per unit of weight.
        vnodes_per_weight: f64,
    },
    /// A node asked for zero virtual nodes (it would own nothing, yet count as a member).
    #[error("a node needs at least one virtual node")]
    ZeroVirtualNodes,
    /// A node asked for more virtual nodes than [`crate::VNODES_PER_NODE_MAX`], or a ring would
    /// hold more than [`crate::RING_VNODES_MAX`].
    #[error("{vnodes} virtual nodes exceeds the limit of {max}")]
    TooManyVirtualNodes {
        /// The requested count.
        vnodes: u64,
        /// The limit.
        max: u64,
    },
    /// The node id is already a member.
    #[error("duplicate node id")]
    DuplicateNode,
    /// Two different node ids have the same 64-bit hash, so their virtual nodes would coincide.
    /// (Probability about 2⁻⁶⁴ per pair; rejected rather than resolved silently.)
    #[error("node id hash {id_hash:#018x} collides with an existing member")]
    NodeIdHashCollision {
        /// The colliding hash.
        id_hash: u64,
    },
    /// The node id is not a member.
    #[error("node not found")]
    NodeNotFound,
    /// The membership would exceed [`crate::MEMBERS_MAX`] nodes.
    #[error("membership is limited to {max} nodes")]
    TooManyNodes {
        /// The limit.
        max: usize,
    },
    /// The bounded-load slack ε must be finite and greater than zero.
    #[error("invalid epsilon {epsilon}: bounded loads need a finite epsilon greater than zero")]
    InvalidEpsilon {
        /// The rejected value.
        epsilon: f64,
    },
    /// The ring's virtual nodes per unit of weight must be finite and positive.
    #[error("invalid vnodes_per_weight {value}: must be finite and greater than zero")]
    InvalidVnodesPerWeight {
        /// The rejected value.
        value: f64,
    },
    /// A zone name longer than [`crate::ZONE_NAME_BYTES_MAX`].
    #[error("zone name of {len} bytes exceeds the limit of {max}")]
    ZoneNameTooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The algorithm cannot honour unequal weights (jump consistent hash has no weights).
    #[error("{algorithm} does not support unequal weights")]
    WeightsUnsupported {
        /// The algorithm's name.
        algorithm: &'static str,
    },
    /// A Maglev lookup table size must be a prime at least as large as the number of nodes and at
    /// most [`crate::MAGLEV_TABLE_SIZE_MAX`].
    #[error("invalid Maglev table size {table_size} for {nodes} nodes: must be prime, >= nodes and <= {max}")]
    InvalidTableSize {
        /// The rejected size.
        table_size: u64,
        /// The number of nodes.
        nodes: usize,
        /// The limit.
        max: u64,
    },
    /// Two structures built with different hash seeds cannot be compared.
    #[error("hash seeds differ ({left:#x} vs {right:#x})")]
    HasherMismatch {
        /// The first seed.
        left: u64,
        /// The second seed.
        right: u64,
    },
    /// `release` was called for a node with no assigned keys.
    #[error("the node has no assigned keys to release")]
    NothingToRelease,
}
