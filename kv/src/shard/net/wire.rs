//! The wire: serde mirrors of the requests and answers, their frames and codec.

use super::*;

/// Every message: the request id the client chose (echoed by the answer) and the body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame<T> {
    /// Matches an answer to its request.
    pub id: u64,
    /// The request or answer.
    pub body: T,
}

/// The wire form of [`ShardQuery`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireQuery {
    /// [`ShardQuery::Kv`] of [`KvQuery::Get`].
    Get(String),
    /// [`ShardQuery::Map`].
    Map,
    /// [`ShardQuery::InDoubt`].
    InDoubt,
}

/// The wire form of [`ShardRequest`]: one variant per variant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireRequest {
    /// A group's [`Request::Propose`].
    Propose {
        /// The group.
        group: GroupId,
        /// The command.
        command: ShardCommand,
    },
    /// A group's [`Request::Read`].
    Read {
        /// The group.
        group: GroupId,
        /// The query.
        query: WireQuery,
    },
    /// A group's [`Request::TransferLeadership`].
    TransferLeadership {
        /// The group.
        group: GroupId,
        /// The new leader.
        to: NodeId,
    },
    /// A group's [`Request::AddLearner`].
    AddLearner {
        /// The group.
        group: GroupId,
        /// The learner.
        node: NodeId,
    },
    /// A group's [`Request::AddVoter`].
    AddVoter {
        /// The group.
        group: GroupId,
        /// The voter.
        node: NodeId,
    },
    /// A group's [`Request::RemoveNode`].
    RemoveNode {
        /// The group.
        group: GroupId,
        /// The member removed.
        node: NodeId,
    },
    /// A group's [`Request::ChangeVoters`].
    ChangeVoters {
        /// The group.
        group: GroupId,
        /// The new voters.
        voters: BTreeSet<NodeId>,
    },
    /// [`GroupsRequest::AddGroup`].
    AddGroup {
        /// The group.
        group: GroupId,
        /// What its configuration is built from.
        spec: Vec<u8>,
    },
    /// [`GroupsRequest::RemoveGroup`].
    RemoveGroup {
        /// The group.
        group: GroupId,
    },
}

/// The wire form of [`RaftError`]: one variant per variant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireRaftError {
    /// [`RaftError::NotLeader`].
    NotLeader {
        /// The leader the process knows of.
        leader: Option<NodeId>,
    },
    /// [`RaftError::Dropped`].
    Dropped {
        /// Where the proposal had been appended.
        index: u64,
    },
    /// [`RaftError::Busy`], with its reason.
    Busy(String),
    /// [`RaftError::TransferInProgress`].
    TransferInProgress(NodeId),
    /// [`RaftError::Invalid`].
    Invalid(String),
    /// [`RaftError::Indeterminate`].
    Indeterminate {
        /// Where the proposal had been appended.
        index: u64,
    },
    /// [`RaftError::TransferTimedOut`].
    TransferTimedOut {
        /// The intended leader.
        target: NodeId,
    },
    /// [`RaftError::LeadershipLost`].
    LeadershipLost {
        /// The leader the process knows of.
        leader: Option<NodeId>,
    },
}

/// The wire form of [`ShardResponse`]: one variant per variant, and
/// [`WireResponse::Unavailable`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireResponse {
    /// A group's [`Response::Applied`].
    Applied {
        /// The group.
        group: GroupId,
        /// Where the entry sits in the group's log.
        index: u64,
        /// What it answered.
        output: ShardOutput,
    },
    /// A group's [`Response::Read`].
    Read {
        /// The group.
        group: GroupId,
        /// What it answered.
        output: ShardOutput,
    },
    /// A group's [`Response::TransferStarted`].
    TransferStarted {
        /// The group.
        group: GroupId,
    },
    /// A group's [`Response::MembershipChanged`].
    MembershipChanged {
        /// The group.
        group: GroupId,
        /// Where the configuration entry sits.
        index: u64,
        /// The configuration now in force.
        membership: Membership,
    },
    /// A group's [`Response::Failed`].
    Failed {
        /// The group.
        group: GroupId,
        /// Why.
        error: WireRaftError,
    },
    /// [`GroupResponse::UnknownGroup`].
    UnknownGroup(GroupId),
    /// [`GroupResponse::Abandoned`].
    Abandoned(GroupId),
    /// [`GroupResponse::Added`].
    Added(GroupId),
    /// [`GroupResponse::Removed`].
    Removed(GroupId),
    /// [`GroupResponse::AlreadyHosted`].
    AlreadyHosted(GroupId),
    /// [`GroupResponse::RemovalPending`].
    RemovalPending(GroupId),
    /// [`GroupResponse::TooManyGroups`].
    TooManyGroups {
        /// The group.
        group: GroupId,
        /// The limit.
        max: u64,
    },
    /// [`GroupResponse::BadSpec`].
    BadSpec {
        /// The group.
        group: GroupId,
        /// Why.
        reason: String,
    },
    /// The process could not hand the request to its node, or the node did not answer in
    /// time: the request may or may not have taken effect. A client reports it as no answer.
    Unavailable(String),
}

/// The reasons of [`RaftError::Busy`] the Raft crate gives; a reason read from the wire is
/// matched against them, since the error holds a `&'static str`.
const BUSY_REASONS: [&str; 6] = [
    "too many pending reads",
    "too many pending proposals",
    "too many uncommitted bytes",
    "a membership change is in progress",
    "the learner has not caught up",
    "the leader has not committed an entry of its term yet",
];
/// The reason of a busy answer whose reason this client does not know.
pub(super) const BUSY_UNKNOWN: &str = "busy (a reason this client does not know)";

impl From<RaftError> for WireRaftError {
    fn from(e: RaftError) -> Self {
        match e {
            RaftError::NotLeader { leader } => WireRaftError::NotLeader { leader },
            RaftError::Dropped { index } => WireRaftError::Dropped { index },
            RaftError::Busy(reason) => WireRaftError::Busy(reason.to_string()),
            RaftError::TransferInProgress(n) => WireRaftError::TransferInProgress(n),
            RaftError::Invalid(s) => WireRaftError::Invalid(s),
            RaftError::Indeterminate { index } => WireRaftError::Indeterminate { index },
            RaftError::TransferTimedOut { target } => WireRaftError::TransferTimedOut { target },
            RaftError::LeadershipLost { leader } => WireRaftError::LeadershipLost { leader },
        }
    }
}

impl From<WireRaftError> for RaftError {
    fn from(e: WireRaftError) -> Self {
        match e {
            WireRaftError::NotLeader { leader } => RaftError::NotLeader { leader },
            WireRaftError::Dropped { index } => RaftError::Dropped { index },
            WireRaftError::Busy(reason) => RaftError::Busy(
                BUSY_REASONS
                    .iter()
                    .find(|r| **r == reason)
                    .copied()
                    .unwrap_or(BUSY_UNKNOWN),
            ),
            WireRaftError::TransferInProgress(n) => RaftError::TransferInProgress(n),
            WireRaftError::Invalid(s) => RaftError::Invalid(s),
            WireRaftError::Indeterminate { index } => RaftError::Indeterminate { index },
            WireRaftError::TransferTimedOut { target } => RaftError::TransferTimedOut { target },
            WireRaftError::LeadershipLost { leader } => RaftError::LeadershipLost { leader },
        }
    }
}

impl From<&ShardRequest> for WireRequest {
    fn from(request: &ShardRequest) -> Self {
        match request {
            GroupsRequest::Group(group, r) => {
                let group = *group;
                match r {
                    Request::Propose(command) => WireRequest::Propose {
                        group,
                        command: command.clone(),
                    },
                    Request::Read(query) => WireRequest::Read {
                        group,
                        query: match query {
                            ShardQuery::Kv(KvQuery::Get(key)) => WireQuery::Get(key.clone()),
                            ShardQuery::Map => WireQuery::Map,
                            ShardQuery::InDoubt => WireQuery::InDoubt,
                        },
                    },
                    Request::TransferLeadership(to) => {
                        WireRequest::TransferLeadership { group, to: *to }
                    }
                    Request::AddLearner(node) => WireRequest::AddLearner { group, node: *node },
                    Request::AddVoter(node) => WireRequest::AddVoter { group, node: *node },
                    Request::RemoveNode(node) => WireRequest::RemoveNode { group, node: *node },
                    Request::ChangeVoters(voters) => WireRequest::ChangeVoters {
                        group,
                        voters: voters.clone(),
                    },
                }
            }
            GroupsRequest::AddGroup { group, spec } => WireRequest::AddGroup {
                group: *group,
                spec: spec.clone(),
            },
            GroupsRequest::RemoveGroup { group } => WireRequest::RemoveGroup { group: *group },
        }
    }
}

impl From<WireRequest> for ShardRequest {
    fn from(request: WireRequest) -> Self {
        let group = |g: GroupId, r| GroupsRequest::Group(g, r);
        match request {
            WireRequest::Propose { group: g, command } => group(g, Request::Propose(command)),
            WireRequest::Read { group: g, query } => group(
                g,
                Request::Read(match query {
                    WireQuery::Get(key) => ShardQuery::Kv(KvQuery::Get(key)),
                    WireQuery::Map => ShardQuery::Map,
                    WireQuery::InDoubt => ShardQuery::InDoubt,
                }),
            ),
            WireRequest::TransferLeadership { group: g, to } => {
                group(g, Request::TransferLeadership(to))
            }
            WireRequest::AddLearner { group: g, node } => group(g, Request::AddLearner(node)),
            WireRequest::AddVoter { group: g, node } => group(g, Request::AddVoter(node)),
            WireRequest::RemoveNode { group: g, node } => group(g, Request::RemoveNode(node)),
            WireRequest::ChangeVoters { group: g, voters } => {
                group(g, Request::ChangeVoters(voters))
            }
            WireRequest::AddGroup { group, spec } => GroupsRequest::AddGroup { group, spec },
            WireRequest::RemoveGroup { group } => GroupsRequest::RemoveGroup { group },
        }
    }
}

impl From<ShardResponse> for WireResponse {
    fn from(response: ShardResponse) -> Self {
        match response {
            GroupResponse::Group(group, r) => match r {
                Response::Applied { index, output } => WireResponse::Applied {
                    group,
                    index,
                    output,
                },
                Response::Read(output) => WireResponse::Read { group, output },
                Response::TransferStarted => WireResponse::TransferStarted { group },
                Response::MembershipChanged { index, membership } => {
                    WireResponse::MembershipChanged {
                        group,
                        index,
                        membership: *membership,
                    }
                }
                Response::Failed(e) => WireResponse::Failed {
                    group,
                    error: e.into(),
                },
            },
            GroupResponse::UnknownGroup(g) => WireResponse::UnknownGroup(g),
            GroupResponse::Abandoned(g) => WireResponse::Abandoned(g),
            GroupResponse::Added(g) => WireResponse::Added(g),
            GroupResponse::Removed(g) => WireResponse::Removed(g),
            GroupResponse::AlreadyHosted(g) => WireResponse::AlreadyHosted(g),
            GroupResponse::RemovalPending(g) => WireResponse::RemovalPending(g),
            GroupResponse::TooManyGroups { group, max } => WireResponse::TooManyGroups {
                group,
                max: u64::try_from(max).unwrap_or(u64::MAX),
            },
            GroupResponse::BadSpec { group, reason } => WireResponse::BadSpec { group, reason },
        }
    }
}

impl WireResponse {
    /// The answer it stands for; `None` for [`WireResponse::Unavailable`] (no answer).
    pub fn into_response(self) -> Option<ShardResponse> {
        let group = |g: GroupId, r| Some(GroupResponse::Group(g, r));
        match self {
            WireResponse::Applied {
                group: g,
                index,
                output,
            } => group(g, Response::Applied { index, output }),
            WireResponse::Read { group: g, output } => group(g, Response::Read(output)),
            WireResponse::TransferStarted { group: g } => group(g, Response::TransferStarted),
            WireResponse::MembershipChanged {
                group: g,
                index,
                membership,
            } => group(
                g,
                Response::MembershipChanged {
                    index,
                    membership: Box::new(membership),
                },
            ),
            WireResponse::Failed { group: g, error } => group(g, Response::Failed(error.into())),
            WireResponse::UnknownGroup(g) => Some(GroupResponse::UnknownGroup(g)),
            WireResponse::Abandoned(g) => Some(GroupResponse::Abandoned(g)),
            WireResponse::Added(g) => Some(GroupResponse::Added(g)),
            WireResponse::Removed(g) => Some(GroupResponse::Removed(g)),
            WireResponse::AlreadyHosted(g) => Some(GroupResponse::AlreadyHosted(g)),
            WireResponse::RemovalPending(g) => Some(GroupResponse::RemovalPending(g)),
            WireResponse::TooManyGroups { group, max } => Some(GroupResponse::TooManyGroups {
                group,
                max: usize::try_from(max).unwrap_or(usize::MAX),
            }),
            WireResponse::BadSpec { group, reason } => {
                Some(GroupResponse::BadSpec { group, reason })
            }
            WireResponse::Unavailable(_) => None,
        }
    }
}

/// The framing of the protocol, with its limit.
pub fn shard_codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(FRAME_BYTES_MAX)
        .new_codec()
}

/// Encodes one frame, refusing one above [`FRAME_BYTES_MAX`].
pub fn encode_frame<T: Serialize>(frame: &Frame<T>) -> Result<Bytes, String> {
    let bytes = Bincode.encode(frame).map_err(|e| e.to_string())?;
    if bytes.len() > FRAME_BYTES_MAX {
        return Err(format!(
            "a frame of {} bytes, above the limit of {FRAME_BYTES_MAX}",
            bytes.len()
        ));
    }
    Ok(Bytes::from(bytes))
}

/// Decodes a request frame from untrusted bytes.
pub fn decode_request(bytes: &[u8]) -> Result<Frame<WireRequest>, String> {
    Bincode.decode(bytes).map_err(|e| e.to_string())
}

/// Decodes an answer frame from untrusted bytes.
pub fn decode_response(bytes: &[u8]) -> Result<Frame<WireResponse>, String> {
    Bincode.decode(bytes).map_err(|e| e.to_string())
}
