//! Log replication (§5.3) and the commit rule (§5.4.2), with the flow control of a production
//! implementation: per-follower probe/replicate states, bounded in-flight AppendEntries, and
//! caps on the entries and bytes of one message.

use std::collections::VecDeque;
use std::sync::Arc;

use common::{NodeId, Outbox, Persist};

use super::log::RaftLog;
use super::RaftNode;
use crate::message::{
    Entry, LogIndex, Membership, Message, PeerProgress, Record, ReplicationState, Role, Term,
};
use crate::state_machine::StateMachine;

/// The leader's view of one follower (§5.3's `nextIndex` and `matchIndex`, plus flow control).
#[derive(Debug)]
pub(crate) struct Progress {
    pub(crate) match_index: LogIndex,
    pub(crate) next_index: LogIndex,
    pub(crate) state: ReplicationState,
    /// In probe state: an AppendEntries is out and unanswered; wait for its answer or the next
    /// heartbeat before sending another.
    pub(crate) probe_sent: bool,
    /// In replicate state: the last index of each AppendEntries in flight, oldest first.
    pub(crate) inflight: VecDeque<LogIndex>,
    /// Heard from since the last check-quorum round.
    pub(crate) recent_active: bool,
    /// The highest heartbeat round the follower answered in this term.
    pub(crate) read_seq_acked: u64,
    /// In snapshot state: the snapshot being sent and the offset of the chunk in flight.
    pub(crate) snapshot_index: LogIndex,
    pub(crate) snapshot_offset: u64,
}

/// The result of AppendEntries' consistency check ([`RaftNode::check_log_match`]).
enum LogMatch {
    /// Our log holds the leader's previous entry: append.
    Matches,
    /// It does not: reject, with the conflicting term and its first index in our log when we
    /// hold a different entry there (so the leader can skip the whole term).
    Mismatch(Option<(Term, LogIndex)>),
    /// The message contradicts a committed entry: already counted as invalid; no answer.
    Invalid,
}

/// The leader's [`Progress`] of each follower, in id order. A cluster has a handful of peers
/// and this is read for every proposal and acknowledgement, so it is a sorted list (lookups by
/// binary search, iteration a walk over one buffer) rather than a tree map.
#[derive(Debug, Default)]
pub(crate) struct Peers {
    peers: Vec<(NodeId, Progress)>,
}

impl Peers {
    fn position(&self, id: NodeId) -> Result<usize, usize> {
        self.peers.binary_search_by_key(&id, |(peer, _)| *peer)
    }

    pub(crate) fn get(&self, id: &NodeId) -> Option<&Progress> {
        let i = self.position(*id).ok()?;
        Some(&self.peers[i].1)
    }

    pub(crate) fn get_mut(&mut self, id: &NodeId) -> Option<&mut Progress> {
        let i = self.position(*id).ok()?;
        Some(&mut self.peers[i].1)
    }

    /// Adds `id` with `progress` unless it is there already; returns whether it was added.
    pub(crate) fn insert_if_absent(&mut self, id: NodeId, progress: Progress) -> bool {
        match self.position(id) {
            Ok(_) => false,
            Err(i) => {
                self.peers.insert(i, (id, progress));
                true
            }
        }
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&NodeId, &Progress)> {
        self.peers.iter().map(|(id, p)| (id, p))
    }

    pub(crate) fn values_mut(&mut self) -> impl Iterator<Item = &mut Progress> {
        self.peers.iter_mut().map(|(_, p)| p)
    }

    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&NodeId, &mut Progress) -> bool) {
        self.peers.retain_mut(|(id, p)| keep(id, p));
    }

    pub(crate) fn clear(&mut self) {
        self.peers.clear();
    }
}

impl FromIterator<(NodeId, Progress)> for Peers {
    fn from_iter<I: IntoIterator<Item = (NodeId, Progress)>>(iter: I) -> Self {
        let mut peers: Vec<(NodeId, Progress)> = iter.into_iter().collect();
        peers.sort_by_key(|(id, _)| *id);
        peers.dedup_by_key(|(id, _)| *id);
        Peers { peers }
    }
}

impl Progress {
    pub(crate) fn new(next_index: LogIndex) -> Self {
        Self {
            match_index: 0,
            next_index,
            state: ReplicationState::Probe,
            probe_sent: false,
            inflight: VecDeque::new(),
            recent_active: true,
            read_seq_acked: 0,
            snapshot_index: 0,
            snapshot_offset: 0,
        }
    }

    pub(crate) fn metrics(&self) -> PeerProgress {
        PeerProgress {
            match_index: self.match_index,
            next_index: self.next_index,
            state: self.state,
            inflight: self.inflight.len(),
        }
    }

    pub(crate) fn become_probe(&mut self) {
        self.state = ReplicationState::Probe;
        self.probe_sent = false;
        self.inflight.clear();
        self.next_index = self.next_index.max(self.match_index + 1);
    }
}

/// The entries of the last AppendEntries the leader built, for the next follower that needs the
/// same ones: in the steady state every follower is sent the same run, and it is built once and
/// shared rather than copied per follower.
pub(super) struct AppendCache<C> {
    last: Option<Arc<[Entry<C>]>>,
    /// The empty list of a heartbeat (shared too: an empty `Arc` slice still allocates).
    empty: Arc<[Entry<C>]>,
}

impl<C: Clone> AppendCache<C> {
    pub(super) fn new() -> Self {
        AppendCache {
            last: None,
            empty: Arc::from([]),
        }
    }

    /// An empty list.
    pub(super) fn none(&self) -> Arc<[Entry<C>]> {
        Arc::clone(&self.empty)
    }

    /// What [`RaftLog::slice_shared`] returns for these arguments: the cached list when it is
    /// the same run, else a new one, which the cache keeps.
    pub(super) fn entries(
        &mut self,
        log: &RaftLog<C>,
        from: LogIndex,
        count_max: usize,
        bytes_max: usize,
        size: impl Fn(&Entry<C>) -> usize,
    ) -> Arc<[Entry<C>]> {
        let (start, n) = log.span(from, count_max, bytes_max, size);
        if n == 0 {
            return self.none();
        }
        if let Some(cached) = self.cached(log, from, n) {
            return cached;
        }
        let fresh = log.shared(start, n);
        self.last = Some(Arc::clone(&fresh));
        fresh
    }

    /// The cached list, if it is the `n` entries the log holds from `from` on.
    pub(super) fn cached(
        &self,
        log: &RaftLog<C>,
        from: LogIndex,
        n: usize,
    ) -> Option<Arc<[Entry<C>]>> {
        let last = self.last.as_ref()?;
        // Log Matching (§5.3): an entry's index and term identify it and every entry before
        // it, so a list that starts at `from`, is as long, and ends in the term the log holds
        // at its end is the list the log would give now.
        let end = from + n as u64 - 1;
        let same = n > 0
            && last.len() == n
            && last.first().is_some_and(|e| e.index == from)
            && last.last().map(|e| e.term) == log.term(end);
        same.then(|| Arc::clone(last))
    }

    /// Forgets the cached list (a new term or role: the log may change below it).
    pub(super) fn clear(&mut self) {
        self.last = None;
    }
}

impl<S: StateMachine> RaftNode<S> {
    fn entry_bytes(e: &Entry<S::Command>) -> usize {
        match &e.payload {
            crate::message::Payload::Noop => 1,
            crate::message::Payload::Membership(m) => 16 * (m.members().len() + 1),
            crate::message::Payload::Command(c) => S::command_bytes(c),
        }
    }

    /// Appends an entry of the leader's own term, persists it, and replicates it.
    pub(super) fn append_as_leader(&mut self, entry: Entry<S::Command>, out: &mut Outbox<Self>) {
        if self.record_deferrable
            && matches!(entry.payload, crate::message::Payload::Command(_))
            && !self.leader_alone_is_quorum()
        {
            // A proposal of a batch (`Node::handle_requests`): its record waits for the end of
            // the batch, where it is built from the list the followers were sent
            // (`persist_deferred_entries`). Nothing between here and there asks for a record
            // or changes the log but by appending, and a leader that is not a quorum on its
            // own commits nothing by appending, so the records come in the same order as if
            // asked for now.
            self.entries_deferred_from.get_or_insert(entry.index);
            self.log.push(entry);
            return;
        }
        self.persist_deferred_entries(out);
        // Every entry proposed in one step goes into one record: the previous one, when it is
        // the record this step asked for last and it ends just before this entry (storage gets
        // the same entries in the same order as from one record per entry).
        match out.last_record_mut() {
            Some(Persist::Append(Record::Entries(batch)))
                if batch.last().is_some_and(|e| e.index + 1 == entry.index) =>
            {
                batch.push(entry.clone());
                // The same record now makes the log durable one entry further.
                if let Some(last) = self.durable_pending.back_mut() {
                    last.1 = entry.index;
                }
            }
            _ => {
                out.persist(Record::Entries(vec![entry.clone()].into()));
                self.asked_durable_through(entry.index);
            }
        }
        if let crate::message::Payload::Membership(m) = &entry.payload {
            self.membership_appended(entry.index, Membership::clone(m), out);
        }
        self.log.push(entry);
        if !self.replication_deferred {
            self.send_new_entry(out);
        }
        // The leader's own log is already the longest a quorum counts, so appending to it moves
        // the commit point only where the leader is a quorum on its own (a single voter).
        if self.leader_alone_is_quorum() {
            self.maybe_commit(out);
        }
    }

    /// Asks for the record of the entries whose record [`Self::append_as_leader`] deferred, if
    /// any: the batch's proposals, from the first deferred one to the end of the log. When the
    /// followers were just sent exactly these entries, the record shares their list (the
    /// leader's own write costs no second list of the entries); otherwise it extends the
    /// record asked for last when that one is the leader's own list and ends just before them,
    /// or is a new list.
    pub(super) fn persist_deferred_entries(&mut self, out: &mut Outbox<Self>) {
        let Some(first) = self.entries_deferred_from.take() else {
            return;
        };
        let last = self.log.last_index();
        if first > last {
            debug_assert!(false, "deferred entries {first}.. gone from the log");
            return;
        }
        let n = (last - first + 1) as usize;
        let record = match self.append_cache.cached(&self.log, first, n) {
            Some(shared) => shared.into(),
            None => {
                if let Some(Persist::Append(Record::Entries(batch))) = out.last_record_mut() {
                    if batch.last().is_some_and(|e| e.index + 1 == first) {
                        if let Some(own) = batch.owned_mut() {
                            own.extend(self.log.range(first, last).cloned());
                            // The same record now makes the log durable further.
                            if let Some(pending) = self.durable_pending.back_mut() {
                                pending.1 = last;
                            }
                            return;
                        }
                    }
                }
                self.log
                    .range(first, last)
                    .cloned()
                    .collect::<Vec<_>>()
                    .into()
            }
        };
        out.persist(Record::Entries(record));
        self.asked_durable_through(last);
    }

    /// Calls `f` for every peer the leader replicates to (or, with `only`, those it selects),
    /// in id order. The ids are gathered first into a buffer the node keeps, so that `f` may
    /// change the progress map, and nothing is allocated in the steady state. A peer that `f`
    /// removes is still visited (every callee looks its progress up and does nothing without
    /// one); one that `f` adds is not.
    pub(super) fn for_each_peer(
        &mut self,
        only: impl Fn(&Progress) -> bool,
        mut f: impl FnMut(&mut Self, NodeId),
    ) {
        let mut peers = std::mem::take(&mut self.peers_scratch);
        peers.clear();
        peers.extend(
            self.progress
                .iter()
                .filter(|(_, p)| only(p))
                .map(|(&id, _)| id),
        );
        for &peer in &peers {
            f(self, peer);
        }
        self.peers_scratch = peers;
    }

    /// Whether this node's vote alone is a majority of every voter group.
    pub(super) fn leader_alone_is_quorum(&self) -> bool {
        // This runs for every proposal: a majority of one voter is that voter, and a larger
        // group needs more than one vote, so the sets are only looked at, never sorted.
        let me = self.config.id;
        let alone = |g: &std::collections::BTreeSet<NodeId>| g.len() == 1 && g.contains(&me);
        alone(&self.membership.voters) && self.membership.voters_outgoing.as_ref().is_none_or(alone)
    }

    /// Replicates a freshly appended entry to every peer, batching under load. A follower in the
    /// replicate state with no AppendEntries in flight gets the entry at once (one client: no
    /// wait). One with AppendEntries in flight gets it with the next message that the answer to
    /// those triggers (in [`Self::handle_append_entries_response`]), together with every entry
    /// proposed meanwhile, unless a full message's worth ([`Config::append_entries_max`]
    /// entries) is already waiting. Under load this turns a message per proposal into a message
    /// per round trip, carrying many proposals; the bounded window
    /// ([`Config::inflight_max`]) is still used when entries come faster than one message per
    /// round trip can carry.
    ///
    /// [`Config::append_entries_max`]: crate::Config::append_entries_max
    /// [`Config::inflight_max`]: crate::Config::inflight_max
    pub(super) fn send_new_entry(&mut self, out: &mut Outbox<Self>) {
        let last = self.log.last_index();
        let append_entries_max = self.config.append_entries_max as u64;
        let waits = move |p: &Progress| {
            let waiting = last.saturating_sub(p.next_index) + 1;
            p.state == ReplicationState::Replicate
                && !p.inflight.is_empty()
                && waiting < append_entries_max
        };
        self.for_each_peer(
            |p| !waits(p),
            |node, peer| node.send_append(peer, false, out),
        );
    }

    /// Sends `peer` what it needs next, within the flow-control limits. `heartbeat` forces a
    /// message even when there is nothing new, so the follower hears from the leader.
    pub(super) fn send_append(&mut self, peer: NodeId, heartbeat: bool, out: &mut Outbox<Self>) {
        let last = self.log.last_index();
        let Some(p) = self.progress.get_mut(&peer) else {
            return;
        };
        match p.state {
            ReplicationState::Snapshot => {
                if heartbeat {
                    self.send_snapshot_probe(peer, out);
                }
                return;
            }
            ReplicationState::Probe => {
                if p.probe_sent && !heartbeat {
                    return;
                }
            }
            ReplicationState::Replicate => {
                let full = p.inflight.len() >= self.config.inflight_max;
                if (full || p.next_index > last) && !heartbeat {
                    return;
                }
            }
        }
        let prev_log_index = p.next_index - 1;
        let Some(prev_log_term) = self.log.term(prev_log_index) else {
            // The entries the follower needs were compacted away (§7).
            self.start_snapshot(peer, out);
            return;
        };
        let room =
            p.state != ReplicationState::Replicate || p.inflight.len() < self.config.inflight_max;
        let entries = if room {
            self.append_cache.entries(
                &self.log,
                p.next_index,
                self.config.append_entries_max,
                self.config.append_bytes_max,
                Self::entry_bytes,
            )
        } else {
            self.append_cache.none()
        };
        match p.state {
            ReplicationState::Probe => p.probe_sent = true,
            ReplicationState::Replicate => {
                if let Some(e) = entries.last() {
                    p.next_index = e.index + 1;
                    p.inflight.push_back(e.index);
                }
            }
            ReplicationState::Snapshot => {}
        }
        let message = Message::AppendEntries {
            term: self.term,
            prev_log_index,
            prev_log_term,
            entries,
            leader_commit: self.commit_index,
            read_seq: self.read_seq,
        };
        if self.config.parallel_append {
            // It claims nothing of this leader's own unsynced records: its term was durable
            // before it could be elected, and its commit index counts only durable entries of
            // its own (§10.2.1).
            out.send_early(peer, message);
        } else {
            out.send(peer, message);
        }
    }

    /// Sends every follower a heartbeat of a new round (§5.2: leaders send periodic heartbeats
    /// to maintain their authority).
    pub(super) fn broadcast_heartbeat(&mut self, out: &mut Outbox<Self>) {
        self.start_read_round();
        self.for_each_peer(
            |_| true,
            |node, peer| {
                if let Some(p) = node.progress.get_mut(&peer) {
                    p.probe_sent = false;
                }
                node.send_append(peer, true, out);
            },
        );
    }

    /// The follower side of AppendEntries (§5.3, Figure 2 "receiver implementation").
    #[allow(clippy::too_many_arguments)]
    pub(super) fn handle_append_entries(
        &mut self,
        from: NodeId,
        prev_log_index: LogIndex,
        prev_log_term: Term,
        entries: Arc<[Entry<S::Command>]>,
        leader_commit: LogIndex,
        read_seq: u64,
        out: &mut Outbox<Self>,
    ) {
        if self.role == Role::Leader {
            // Two leaders in one term would break election safety (§5.2): the message is forged
            // or the sender is broken.
            self.reject_invalid(from, "AppendEntries from another leader of this term");
            return;
        }
        if self.role != Role::Follower && self.role != Role::Learner || self.leader != Some(from) {
            self.become_follower(self.term, Some(from), out);
        }
        self.election_elapsed_ticks = 0;

        // Never trust the shape of the message.
        if !self.append_is_well_formed(from, prev_log_index, prev_log_term, &entries) {
            return;
        }

        let reject = |node: &Self, conflict: Option<(Term, LogIndex)>, out: &mut Outbox<Self>| {
            out.send(
                from,
                Message::AppendEntriesResponse {
                    term: node.term,
                    success: false,
                    index: prev_log_index,
                    conflict,
                    last_log_index: node.log.last_index(),
                    read_seq,
                },
            );
        };
        // The consistency check: our log must hold prev_log_index with prev_log_term.
        match self.check_log_match(from, prev_log_index, prev_log_term) {
            LogMatch::Matches => {}
            LogMatch::Mismatch(conflict) => {
                reject(self, conflict, out);
                return;
            }
            LogMatch::Invalid => return,
        }

        // Append what is new; replace what conflicts (§5.3: "if an existing entry conflicts
        // with a new one, delete the existing entry and all that follow it").
        let match_index = prev_log_index + entries.len() as u64;
        if !self.append_new_entries(from, entries, out) {
            return;
        }
        let commit = leader_commit.min(match_index);
        if commit > self.commit_index {
            self.commit_index = commit;
            self.apply_committed(out);
        }
        out.send(
            from,
            Message::AppendEntriesResponse {
                term: self.term,
                success: true,
                index: match_index,
                conflict: None,
                last_log_index: self.log.last_index(),
                read_seq,
            },
        );
    }

    /// AppendEntries' consistency check (§5.3): whether our log holds `prev_log_index` with
    /// `prev_log_term`. A mismatch at or below our commit index is counted and logged as invalid
    /// (a leader never contradicts a committed entry).
    fn check_log_match(
        &mut self,
        from: NodeId,
        prev_log_index: LogIndex,
        prev_log_term: Term,
    ) -> LogMatch {
        if prev_log_index > self.log.last_index() {
            return LogMatch::Mismatch(None);
        }
        if prev_log_index >= self.log.snapshot_index() {
            if let Some(t) = self.log.term(prev_log_index) {
                if t != prev_log_term {
                    if prev_log_index <= self.commit_index {
                        self.reject_invalid(from, "AppendEntries contradicts a committed entry");
                        return LogMatch::Invalid;
                    }
                    let first = self.log.first_index_of_term_at(prev_log_index);
                    return LogMatch::Mismatch(Some((t, first)));
                }
            }
        }
        // Below the snapshot, entries are committed and therefore match (§5.4).
        LogMatch::Matches
    }

    /// Whether an AppendEntries is well formed: its entries consecutive from
    /// `prev_log_index + 1`, their terms not decreasing and none from the future. Counts and
    /// logs a malformed one.
    fn append_is_well_formed(
        &mut self,
        from: NodeId,
        prev_log_index: LogIndex,
        prev_log_term: Term,
        entries: &[Entry<S::Command>],
    ) -> bool {
        let mut expected = prev_log_index;
        let mut prev_term = prev_log_term;
        for e in entries {
            expected += 1;
            if e.index != expected || e.term < prev_term || e.term > self.term {
                self.reject_invalid(
                    from,
                    "AppendEntries entries out of order or from the future",
                );
                return false;
            }
            prev_term = e.term;
        }
        if prev_log_term > self.term {
            self.reject_invalid(from, "AppendEntries prev_log_term from the future");
            return false;
        }
        true
    }

    /// Appends the entries of an AppendEntries that passed the consistency check: those already
    /// held are skipped, a conflicting suffix is cut (§5.3: "if an existing entry conflicts
    /// with a new one, delete the existing entry and all that follow it") and the rest
    /// appended and persisted. False when the message would replace a committed entry.
    fn append_new_entries(
        &mut self,
        from: NodeId,
        entries: Arc<[Entry<S::Command>]>,
        out: &mut Outbox<Self>,
    ) -> bool {
        // The entries are consecutive (checked above), so those already held (below the
        // snapshot, or in the log with the same term) are a prefix; every one after it is new.
        let held = entries
            .iter()
            .take_while(|e| {
                e.index <= self.log.snapshot_index()
                    || (e.index <= self.log.last_index() && self.log.term(e.index) == Some(e.term))
            })
            .count();
        let new = &entries[held..];
        if let Some(first) = new.first() {
            let first = first.index;
            if first <= self.log.last_index() {
                if first <= self.commit_index {
                    self.reject_invalid(from, "AppendEntries replaces a committed entry");
                    return false;
                }
                self.log.truncate_from(first);
                self.membership_truncated(first);
                self.durable_only_through(first - 1);
                out.persist(Record::Truncate { from: first });
                self.asked_durable_through(first - 1);
            }
            for e in new {
                if let crate::message::Payload::Membership(m) = &e.payload {
                    self.membership_appended(e.index, Membership::clone(m), out);
                }
                self.log.push(e.clone());
            }
            // The message's own list becomes the record when all of it is new (the usual
            // case): no second list of the entries.
            let record = if held == 0 {
                entries.into()
            } else {
                new.to_vec().into()
            };
            out.persist(Record::Entries(record));
            self.asked_durable_through(self.log.last_index());
        }
        true
    }

    /// The leader side: advance or back off, then send more.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn handle_append_entries_response(
        &mut self,
        from: NodeId,
        success: bool,
        index: LogIndex,
        conflict: Option<(Term, LogIndex)>,
        last_log_index: LogIndex,
        read_seq: u64,
        out: &mut Outbox<Self>,
    ) {
        if self.role != Role::Leader {
            return;
        }
        let last = self.log.last_index();
        if index > last || read_seq > self.read_seq {
            self.reject_invalid(from, "AppendEntriesResponse past the leader's log");
            return;
        }
        let Some(p) = self.progress.get_mut(&from) else {
            return;
        };
        p.recent_active = true;
        p.read_seq_acked = p.read_seq_acked.max(read_seq);
        if success {
            self.append_accepted(from, index, out);
            return;
        }
        // Rejected. A rejection at or below what is known to match is stale.
        let stale = index < p.match_index
            || (index == p.match_index && index != 0)
            || (index == 0 && conflict.is_none() && p.match_index > 0)
            // An answer to an older probe.
            || (p.state == ReplicationState::Probe && index + 1 != p.next_index);
        if stale {
            self.advance_reads(out);
            return;
        }
        // Fast backtracking (§5.3, "the follower can include the term of the conflicting entry
        // and the first index it stores for that term").
        let hint = match conflict {
            Some((term, first)) => match self.log.last_index_of_term(term) {
                Some(i) => i + 1,
                None => first,
            },
            None => last_log_index + 1,
        };
        p.next_index = hint.min(index).max(p.match_index + 1);
        p.become_probe();
        self.advance_reads(out);
        self.send_append(from, false, out);
    }

    /// A follower holds the leader's log up to `index`: its progress advances, which may commit
    /// entries, answer reads or complete a transfer, and the pipeline is kept full.
    fn append_accepted(&mut self, from: NodeId, index: LogIndex, out: &mut Outbox<Self>) {
        let Some(p) = self.progress.get_mut(&from) else {
            return;
        };
        if index > p.match_index {
            p.match_index = index;
        }
        p.next_index = p.next_index.max(p.match_index + 1);
        while p.inflight.front().is_some_and(|&i| i <= index) {
            p.inflight.pop_front();
        }
        match p.state {
            ReplicationState::Probe => {
                p.state = ReplicationState::Replicate;
                p.inflight.clear();
                p.next_index = p.match_index + 1;
            }
            ReplicationState::Replicate | ReplicationState::Snapshot => {}
        }
        let is_voter = self.membership.is_voter(from);
        if is_voter {
            self.maybe_commit(out);
        }
        self.advance_reads(out);
        self.maybe_send_timeout_now(out);
        // Keep the pipeline full.
        while let Some(p) = self.progress.get(&from) {
            let before = (p.next_index, p.inflight.len());
            if p.state != ReplicationState::Replicate || p.next_index > self.log.last_index() {
                break;
            }
            self.send_append(from, false, out);
            let after = self
                .progress
                .get(&from)
                .map(|p| (p.next_index, p.inflight.len()));
            if after == Some(before) {
                break;
            }
        }
    }

    /// The commit rule (§5.3, §5.4.2): the highest index stored on a majority of voters is
    /// committed, but only if its entry is of the leader's current term (Figure 8).
    pub(super) fn maybe_commit(&mut self, out: &mut Outbox<Self>) {
        if self.role != Role::Leader {
            return;
        }
        let me = self.config.id;
        // With parallel appends the leader's own entries count once they are durable.
        let last = if self.config.parallel_append {
            self.log.last_index().min(self.durable_index)
        } else {
            self.log.last_index()
        };
        let n = self.membership.quorum_value(|v| {
            if v == me {
                last
            } else {
                self.progress.get(&v).map_or(0, |p| p.match_index)
            }
        });
        if n > self.commit_index && self.log.term(n) == Some(self.term) {
            self.commit_index = n;
            self.apply_committed(out);
            self.maybe_finish_joint(out);
        }
    }
}
