//! The consensus node behind the client port ([`Backend`], Raft or Multi-Paxos): client
//! requests served through it, membership changes and leadership transfer, the graceful
//! hand-over of leadership, and the protocols' errors as client answers.

use super::*;

#[derive(Clone)]
pub(super) enum Backend {
    Raft(raft::RaftHandle<KvMachine>),
    Paxos(paxos::PaxosHandle<KvMachine>),
}

/// Longest a stopping leader waits for the follower it handed leadership to.
pub const HANDOVER_WAIT: Duration = Duration::from_secs(3);
/// How often a stopping leader looks whether its successor took over.
const HANDOVER_POLL: Duration = Duration::from_millis(10);

impl Backend {
    /// Raft only: if this node leads, hands leadership to the most up-to-date follower and waits
    /// (at most [`HANDOVER_WAIT`]) until it no longer leads, so clients meet a new leader
    /// without waiting out an election timeout. Multi-Paxos has no transfer: its replicas elect
    /// a new leader a few heartbeat rounds after this one stops answering.
    pub(super) async fn hand_over(&self) {
        let Backend::Raft(h) = self else { return };
        let Ok(m) = h.metrics().await else { return };
        if m.role != raft::Role::Leader {
            return;
        }
        let Some(target) = m
            .progress
            .iter()
            .max_by_key(|(_, p)| p.match_index)
            .map(|(&id, _)| id)
        else {
            return;
        };
        if let Err(e) = h.transfer_leadership(target).await {
            tracing::warn!("leadership transfer to node {target} failed: {e}");
            return;
        }
        let deadline = Instant::now() + HANDOVER_WAIT;
        while Instant::now() < deadline {
            match h.metrics().await {
                Ok(m) if m.role == raft::Role::Leader => {
                    tokio::time::sleep(HANDOVER_POLL).await;
                }
                _ => return,
            }
        }
        tracing::warn!("node {target} did not take over within {HANDOVER_WAIT:?}");
    }

    /// The node's state for the metrics, or `None` if it does not answer.
    pub(super) async fn view(&self) -> Option<(NodeView, DriverStats)> {
        match self {
            Backend::Raft(h) => {
                let m = h.metrics().await.ok()?;
                let peer_lag = m
                    .progress
                    .iter()
                    .map(|(&peer, p)| (peer, m.commit_index.saturating_sub(p.match_index)))
                    .collect();
                Some((
                    NodeView {
                        is_leader: m.role == raft::Role::Leader,
                        leader: m.leader,
                        term: m.term,
                        commit_index: m.commit_index,
                        applied_index: m.applied_index,
                        peer_lag,
                        down: None,
                    },
                    h.driver().stats(),
                ))
            }
            Backend::Paxos(h) => {
                let m = h.metrics().await.ok()?;
                Some((
                    NodeView {
                        is_leader: m.is_leader,
                        leader: m.leader,
                        term: m.ballot.round,
                        commit_index: m.decided,
                        applied_index: m.applied,
                        peer_lag: Vec::new(),
                        down: None,
                    },
                    h.node().stats(),
                ))
            }
        }
    }

    /// Waits until the node stops (its storage failed, say), and says why: `Ok(())` after a
    /// clean shutdown.
    pub(super) async fn stopped(&self) -> Result<(), common::driver::DriverError> {
        match self {
            Backend::Raft(h) => h.driver().stopped().await,
            Backend::Paxos(h) => h.node().stopped().await,
        }
    }

    /// The driver's counters.
    pub(super) fn stats(&self) -> DriverStats {
        match self {
            Backend::Raft(h) => h.driver().stats(),
            Backend::Paxos(h) => h.node().stats(),
        }
    }

    /// Stops the node: it takes no new input, persists what its steps produced and fails the
    /// requests still waiting.
    pub(super) async fn shutdown(&self) -> Result<(), String> {
        match self {
            Backend::Raft(h) => h.shutdown().await.map_err(|e| e.to_string()),
            Backend::Paxos(h) => h.shutdown().await.map_err(|e| e.to_string()),
        }
    }

    /// Hands a put, get or scan to the node at once and returns its answer as the protocol's
    /// small future; any other request comes back, for [`Backend::serve`]. This is the path of
    /// nearly every request, kept free of `async` state machines: a connection holds one
    /// [`Submitted`] per request in flight, and they reach the node in the order they came.
    pub(super) fn submit(&self, request: ClientRequest) -> Result<Submitted, ClientRequest> {
        Ok(match (self, request) {
            (_, ClientRequest::Write(command)) if command.op.is_membership() => {
                return Err(ClientRequest::Write(command))
            }
            (Backend::Raft(h), ClientRequest::Write(command)) => {
                Submitted::RaftWrite(h.submit(command))
            }
            (Backend::Raft(h), ClientRequest::Get { key }) => {
                Submitted::RaftRead(h.submit_read(KvQuery::Get(key)))
            }
            (Backend::Raft(h), ClientRequest::Scan { prefix, limit }) => {
                Submitted::RaftRead(h.submit_read(KvQuery::Scan { prefix, limit }))
            }
            // Exactly-once is the state machine's session table (the same on both protocols),
            // so no paxos-level session is passed.
            (Backend::Paxos(h), ClientRequest::Write(command)) => {
                Submitted::PaxosWrite(h.submit(command, None))
            }
            (Backend::Paxos(h), ClientRequest::Get { key }) => {
                Submitted::PaxosRead(h.submit_read(KvQuery::Get(key)))
            }
            (Backend::Paxos(h), ClientRequest::Scan { prefix, limit }) => {
                Submitted::PaxosRead(h.submit_read(KvQuery::Scan { prefix, limit }))
            }
            (_, other) => return Err(other),
        })
    }

    /// Serves any client request: puts, gets and scans through [`Backend::submit`], the rest
    /// (status, membership) here.
    pub(super) async fn serve(&self, dir: &Directory, request: ClientRequest) -> ClientReply {
        let request = match self.submit(request) {
            Ok(submitted) => return submitted.await,
            Err(request) => request,
        };
        let result = match request {
            ClientRequest::Write(command) if command.op.is_membership() => {
                return ClientReply::Invalid(
                    "the address book changes only through `member add` and `member remove`".into(),
                )
            }
            ClientRequest::Members => self.members(dir).await,
            ClientRequest::AddMember(command) => self.add_member(dir, command).await,
            ClientRequest::PromoteMember(id) => self.promote_member(dir, id).await,
            ClientRequest::RemoveMember(command) => self.remove_member(dir, command).await,
            ClientRequest::TransferLeader(id) => self.transfer_leader(dir, id).await,
            ClientRequest::Status => return self.status().await,
            // Puts, gets and scans were taken by `submit` above.
            other => {
                return ClientReply::Refused(format!("{} has no handler", other.kind()));
            }
        };
        match result {
            Ok(info) => ClientReply::Members(Box::new(info)),
            Err(reply) => reply,
        }
    }

    /// The answer to [`ClientRequest::Status`]: this node's view of the leader and its indexes.
    async fn status(&self) -> ClientReply {
        match self {
            Backend::Raft(h) => match h.metrics().await {
                Ok(m) => ClientReply::Status {
                    id: m.id,
                    is_leader: m.role == raft::Role::Leader,
                    leader: m.leader,
                    term: m.term,
                    commit_index: m.commit_index,
                    applied_index: m.applied_index,
                },
                Err(e) => ClientReply::Refused(e.to_string()),
            },
            Backend::Paxos(h) => match h.metrics().await {
                Ok(m) => ClientReply::Status {
                    id: m.id,
                    is_leader: m.is_leader,
                    leader: m.leader,
                    term: m.ballot.round,
                    commit_index: m.decided,
                    applied_index: m.applied,
                },
                Err(e) => ClientReply::Refused(e.to_string()),
            },
        }
    }

    /// Proposes an address-book command through the log (exactly once per session).
    pub(super) async fn record(&self, command: KvCommand) -> Result<(), ClientReply> {
        let out = match self {
            Backend::Raft(h) => h.propose(command).await.map(|(_, o)| o).map_err(raft_reply),
            Backend::Paxos(h) => h.propose(command, None).await.map_err(paxos_reply),
        }?;
        match out {
            // Applied as a refusal: the session holds this sequence number now, so the client
            // must not reuse it ("unknown" keeps it from doing so). Rare: the checks before
            // proposing catch the usual cases.
            KvOutput::Refused(why) => Err(ClientReply::Unknown(why)),
            KvOutput::Stale => Err(ClientReply::Output(KvOutput::Stale)),
            _ => Ok(()),
        }
    }

    /// The protocol's configuration: leader, voters, learners.
    pub(super) async fn configuration(
        &self,
        dir: &Directory,
    ) -> Result<(Option<NodeId>, bool, Vec<NodeId>, Vec<NodeId>), ClientReply> {
        match self {
            Backend::Raft(h) => {
                let m = h.metrics().await.map_err(raft_reply)?;
                Ok((
                    m.leader,
                    m.role == raft::Role::Leader,
                    m.membership.voters.iter().copied().collect(),
                    m.membership.learners.iter().copied().collect(),
                ))
            }
            Backend::Paxos(h) => {
                let m = h.metrics().await.map_err(paxos_reply)?;
                // Registered replicas not (or not yet) in the configuration are its learners.
                let book = dir.book.borrow().clone();
                let learners = book
                    .nodes
                    .keys()
                    .filter(|id| !m.members.contains(id))
                    .copied()
                    .collect();
                Ok((m.leader, m.is_leader, m.members.clone(), learners))
            }
        }
    }

    /// The answer to [`ClientRequest::Members`].
    pub(super) async fn members(&self, dir: &Directory) -> Result<MembersInfo, ClientReply> {
        let (leader, _, voters, learners) = self.configuration(dir).await?;
        Ok(dir.info(leader, voters, learners))
    }

    /// Leader only: `NotLeader` elsewhere.
    pub(super) async fn require_leader(&self, dir: &Directory) -> Result<(), ClientReply> {
        let (leader, is_leader, _, _) = self.configuration(dir).await?;
        if is_leader {
            Ok(())
        } else {
            Err(ClientReply::NotLeader { leader })
        }
    }

    /// [`ClientRequest::AddMember`]: record the addresses, then join the configuration. A retry
    /// finds both done and answers the same.
    pub(super) async fn add_member(
        &self,
        dir: &Directory,
        command: KvCommand,
    ) -> Result<MembersInfo, ClientReply> {
        let KvOp::Register { id, .. } = command.op else {
            return Err(ClientReply::Invalid(
                "add-member carries a registration".into(),
            ));
        };
        if id == 0 {
            return Err(ClientReply::Invalid("node id 0 is reserved".into()));
        }
        if dir.book.borrow().removed.contains(&id) {
            return Err(ClientReply::Invalid(format!(
                "node {id} was removed; a removed id is never used again"
            )));
        }
        self.require_leader(dir).await?;
        self.record(command).await?;
        let joined = async {
            match self {
                Backend::Raft(h) => {
                    let m = h.metrics().await.map_err(raft_reply)?;
                    if !m.membership.is_member(id) {
                        h.add_learner(id).await.map_err(raft_reply)?;
                    }
                }
                Backend::Paxos(h) => {
                    let m = h.metrics().await.map_err(paxos_reply)?;
                    if !m.members.contains(&id) {
                        let mut members = m.members.clone();
                        members.push(id);
                        h.reconfigure(members).await.map_err(paxos_reply)?;
                    }
                }
            }
            Ok(())
        };
        // The registration is applied: from here on a failure is not "nothing happened", and
        // the client must retry the same request (which finds the registration done).
        joined.await.map_err(|reply: ClientReply| match reply {
            ClientReply::NotLeader { leader } => ClientReply::Unknown(format!(
                "addresses recorded; leadership moved (to {leader:?}) before the replica joined"
            )),
            ClientReply::Refused(why) => {
                ClientReply::Unknown(format!("addresses recorded; joining failed: {why}"))
            }
            other => other,
        })?;
        self.members(dir).await
    }

    /// [`ClientRequest::PromoteMember`] (Raft): learner to voter.
    pub(super) async fn promote_member(
        &self,
        dir: &Directory,
        id: NodeId,
    ) -> Result<MembersInfo, ClientReply> {
        let Backend::Raft(h) = self else {
            return Err(ClientReply::Invalid(
                "Multi-Paxos adds voting members directly; there is nothing to promote".into(),
            ));
        };
        let m = h.metrics().await.map_err(raft_reply)?;
        if m.membership.learners.contains(&id) {
            h.add_voter(id).await.map_err(raft_reply)?;
        } else if !m.membership.voters.contains(&id) {
            return Err(ClientReply::Invalid(format!(
                "node {id} is not a learner: add it first"
            )));
        }
        self.members(dir).await
    }

    /// [`ClientRequest::RemoveMember`]: leave the configuration, then the address book. A retry
    /// (at the new leader, if the leader removed itself) finds the first part done.
    pub(super) async fn remove_member(
        &self,
        dir: &Directory,
        command: KvCommand,
    ) -> Result<MembersInfo, ClientReply> {
        let KvOp::Deregister { id } = command.op else {
            return Err(ClientReply::Invalid(
                "remove-member carries a deregistration".into(),
            ));
        };
        self.require_leader(dir).await?;
        match self {
            Backend::Raft(h) => {
                let m = h.metrics().await.map_err(raft_reply)?;
                if m.membership.is_member(id) {
                    if m.membership.voters.len() == 1 && m.membership.voters.contains(&id) {
                        return Err(ClientReply::Invalid(format!("node {id} is the last voter")));
                    }
                    h.remove_node(id).await.map_err(raft_reply)?;
                }
            }
            Backend::Paxos(h) => {
                let m = h.metrics().await.map_err(paxos_reply)?;
                if m.members.contains(&id) {
                    let members: Vec<NodeId> =
                        m.members.iter().copied().filter(|&n| n != id).collect();
                    if members.is_empty() {
                        return Err(ClientReply::Invalid(format!(
                            "node {id} is the last member"
                        )));
                    }
                    h.reconfigure(members).await.map_err(paxos_reply)?;
                }
            }
        }
        self.record(command).await?;
        self.members(dir).await
    }

    /// [`ClientRequest::TransferLeader`] (Raft): hands over and waits (at most
    /// [`HANDOVER_WAIT`]) until the target leads.
    pub(super) async fn transfer_leader(
        &self,
        dir: &Directory,
        id: NodeId,
    ) -> Result<MembersInfo, ClientReply> {
        let Backend::Raft(h) = self else {
            return Err(ClientReply::Invalid(
                "Multi-Paxos has no leadership transfer: stop the leader's process (SIGTERM) \
                 and another replica takes over"
                    .into(),
            ));
        };
        let m = h.metrics().await.map_err(raft_reply)?;
        if m.leader == Some(id) {
            return self.members(dir).await;
        }
        if m.role != raft::Role::Leader {
            return Err(ClientReply::NotLeader { leader: m.leader });
        }
        h.transfer_leadership(id).await.map_err(raft_reply)?;
        let deadline = Instant::now() + HANDOVER_WAIT;
        while Instant::now() < deadline {
            let m = h.metrics().await.map_err(raft_reply)?;
            if m.leader == Some(id) {
                return self.members(dir).await;
            }
            tokio::time::sleep(HANDOVER_POLL).await;
        }
        Err(ClientReply::Refused(format!(
            "node {id} did not take over within {HANDOVER_WAIT:?}"
        )))
    }
}

/// A put, get or scan handed to the node by [`Backend::submit`]: resolves to the client's
/// answer, as [`Backend::serve`] would give it.
pub(super) enum Submitted {
    RaftWrite(raft::Proposal<KvMachine>),
    RaftRead(raft::ReadAnswer<KvMachine>),
    PaxosWrite(paxos::Proposal<KvMachine>),
    PaxosRead(paxos::ReadAnswer<KvMachine>),
}

impl Submitted {
    /// Whether this is a write (whose time to its answer is the proposal latency).
    pub(super) fn is_write(&self) -> bool {
        matches!(self, Submitted::RaftWrite(_) | Submitted::PaxosWrite(_))
    }
}

impl Future for Submitted {
    type Output = ClientReply;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<ClientReply> {
        match &mut *self {
            Submitted::RaftWrite(p) => Pin::new(p).poll(cx).map(|result| match result {
                Ok((_, out)) => ClientReply::Output(out),
                Err(e) => raft_reply(e),
            }),
            Submitted::RaftRead(r) => Pin::new(r)
                .poll(cx)
                .map(|result| read_reply(result.map_err(raft_reply))),
            Submitted::PaxosWrite(p) => Pin::new(p).poll(cx).map(|result| match result {
                Ok(out) => ClientReply::Output(out),
                Err(e) => paxos_reply(e),
            }),
            Submitted::PaxosRead(r) => Pin::new(r)
                .poll(cx)
                .map(|result| read_reply(result.map_err(paxos_reply))),
        }
    }
}

/// The answer to a read: a read changes nothing, so a failure whose effect would otherwise be
/// unknown is a plain refusal.
fn read_reply(result: Result<KvOutput, ClientReply>) -> ClientReply {
    match result {
        Ok(out) => ClientReply::Output(out),
        Err(ClientReply::Unknown(why)) => ClientReply::Refused(why),
        Err(other) => other,
    }
}

/// A Raft error as the client's answer: refused when nothing was proposed, unknown otherwise.
fn raft_reply(e: raft::ClientError) -> ClientReply {
    use raft::{ClientError, RaftError};
    match e {
        ClientError::Raft(RaftError::NotLeader { leader })
        | ClientError::Raft(RaftError::LeadershipLost { leader }) => {
            ClientReply::NotLeader { leader }
        }
        ClientError::Raft(
            e @ (RaftError::Busy(_)
            | RaftError::TransferInProgress(_)
            | RaftError::Invalid(_)
            | RaftError::Dropped { .. }),
        ) => ClientReply::Refused(e.to_string()),
        other => ClientReply::Unknown(other.to_string()),
    }
}

/// A Multi-Paxos error as the client's answer.
fn paxos_reply(e: paxos::ClientError) -> ClientReply {
    use paxos::{ClientError, PaxosError};
    match e {
        ClientError::Paxos(PaxosError::NotLeader { leader }) => ClientReply::NotLeader { leader },
        ClientError::Paxos(e @ (PaxosError::Busy | PaxosError::Config(_))) => {
            ClientReply::Refused(e.to_string())
        }
        other => ClientReply::Unknown(other.to_string()),
    }
}
