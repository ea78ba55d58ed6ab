//! The properties of the paper's Figure 3 as simulator invariants (election safety, leader
//! append-only, log matching, leader completeness, state machine safety), and the check that a
//! commit index a follower learned is durable on a majority (for the leader's parallel append).

use super::*;

/// Election safety (§5.2): at most one leader can be elected in a given term. The leader of
/// every term ever seen is remembered, across crashes.
#[derive(Default)]
pub struct ElectionSafety {
    /// The leader seen in each term.
    pub leaders: BTreeMap<Term, NodeId>,
}

impl Invariant for ElectionSafety {
    fn name(&self) -> &'static str {
        "election safety (§5.2)"
    }

    fn check(&mut self, nodes: &[Live<'_>]) -> Result<(), String> {
        for n in nodes.iter().filter(|n| n.node.role() == Role::Leader) {
            let term = n.node.term();
            let first = *self.leaders.entry(term).or_insert(n.id);
            if first != n.id {
                return Err(format!(
                    "two leaders in term {term}: node {first} and node {}",
                    n.id
                ));
            }
        }
        Ok(())
    }
}

/// Leader append-only (§5.3, Figure 3): a leader never overwrites or deletes entries in its
/// log; it only appends new entries. While a node leads a term, every entry it held at an
/// earlier step must still be there with the same term (compaction into a snapshot aside).
#[derive(Default)]
pub struct LeaderAppendOnly {
    /// Per node leading a term: the term, its snapshot index and the terms of the entries after
    /// it, as last read.
    leading: BTreeMap<NodeId, (Term, LogIndex, Vec<Term>)>,
}

impl Invariant for LeaderAppendOnly {
    fn name(&self) -> &'static str {
        "leader append-only (§5.3)"
    }

    fn check(&mut self, nodes: &[Live<'_>]) -> Result<(), String> {
        forget_down(&mut self.leading, nodes);
        for n in nodes {
            if n.node.role() != Role::Leader {
                self.leading.remove(&n.id);
                continue;
            }
            let term = n.node.term();
            if let Some((t, base, terms)) = self.leading.get(&n.id) {
                if *t == term {
                    let first = n.node.first_log_index();
                    for (k, &old) in terms.iter().enumerate() {
                        let index = base + 1 + k as u64;
                        let now = n.node.entry_term(index);
                        if index >= first && now != Some(old) {
                            return Err(format!(
                                "leader {} of term {term} replaced or removed entry {index} \
                                 (term {old}, now {now:?})",
                                n.id
                            ));
                        }
                    }
                }
            }
            let base = n.node.first_log_index() - 1;
            let terms = (base + 1..=n.node.last_log_index())
                .map(|i| n.node.entry_term(i).unwrap_or(0))
                .collect();
            self.leading.insert(n.id, (term, base, terms));
        }
        Ok(())
    }
}

/// Log matching (§5.3): if two logs contain an entry with the same index and term, the logs are
/// identical in all entries up through that index.
///
/// Checked in the inductive form the paper proves it by: every entry with a given index and
/// term, in any log at any time, carries the same payload and follows an entry of the same
/// term. Two logs that agree at `(index, term)` therefore agree on the entry before it, and so
/// on down to the older of their snapshots. Each step reads the entries whose index or term
/// changed since the node was last read (a restarted node is read in full).
#[derive(Default)]
pub struct LogMatching {
    /// `(index, term)` → the term of the entry before it and the payload, as first seen.
    seen: HashMap<(LogIndex, Term), (Term, Payload<KvCommand>, NodeId)>,
    /// Per node: the snapshot index and the terms of the entries after it, as last read.
    read: BTreeMap<NodeId, (LogIndex, Vec<Term>)>,
}

impl Invariant for LogMatching {
    fn name(&self) -> &'static str {
        "log matching (§5.3)"
    }

    fn check(&mut self, nodes: &[Live<'_>]) -> Result<(), String> {
        forget_down(&mut self.read, nodes);
        for n in nodes {
            let base = n.node.first_log_index() - 1;
            let last = n.node.last_log_index();
            let (old_base, old_terms) = self.read.entry(n.id).or_insert((base, Vec::new()));
            if *old_base != base {
                old_terms.clear();
                *old_base = base;
            }
            // The first index whose term differs from what was read last time.
            let mut changed = base + 1;
            for (k, &t) in old_terms.iter().enumerate() {
                let index = base + 1 + k as u64;
                if index > last || n.node.entry_term(index) != Some(t) {
                    break;
                }
                changed = index + 1;
            }
            old_terms.truncate((changed - base - 1) as usize);
            for index in changed..=last {
                let Some(entry) = n.node.entry(index) else {
                    return Err(format!("node {}: entry {index} missing from its log", n.id));
                };
                let prev = n.node.entry_term(index - 1).unwrap_or(0);
                let key = (index, entry.term);
                match self.seen.get(&key) {
                    Some((p, payload, by)) if *p != prev || *payload != entry.payload => {
                        return Err(format!(
                            "entry ({index}, term {}) differs between logs: node {by} holds \
                             {payload:?} after term {p}, node {} holds {:?} after term {prev}",
                            entry.term, n.id, entry.payload
                        ));
                    }
                    Some(_) => {}
                    None => {
                        self.seen.insert(key, (prev, entry.payload.clone(), n.id));
                    }
                }
                old_terms.push(entry.term);
            }
        }
        Ok(())
    }
}

/// Leader completeness (§5.4): if a log entry is committed in a given term, that entry is
/// present in the logs of the leaders of all higher terms. Every entry a synced node holds at
/// or below its commit index counts as committed from then on, in the term that node was in
/// when it was first seen so (at least the term of the leader that committed it, since a node
/// learns a commit index only from a leader of its current term); every leader of that term or
/// later must hold it unless its log has compacted it. The term the entry was *created* in is
/// not the term it was committed in: an entry of term 1 may be committed only in term 3, and
/// a leader of term 2 may rightly lack it.
#[derive(Default)]
pub struct LeaderCompleteness {
    /// Committed index → (the entry's term, the term it was first seen committed in, the node
    /// it was first seen committed on).
    pub committed: BTreeMap<LogIndex, (Term, Term, NodeId)>,
    /// Per node: the commit index up to which its entries were recorded.
    recorded: BTreeMap<NodeId, LogIndex>,
}

impl Invariant for LeaderCompleteness {
    fn name(&self) -> &'static str {
        "leader completeness (§5.4)"
    }

    fn check(&mut self, nodes: &[Live<'_>]) -> Result<(), String> {
        forget_down(&mut self.recorded, nodes);
        for n in nodes.iter().filter(|n| n.synced) {
            let commit = n.node.commit_index();
            let done = self.recorded.entry(n.id).or_insert(0);
            // The snapshot's last entry is known by its term even though it is compacted.
            let from = (*done + 1).max(n.node.first_log_index().saturating_sub(1).max(1));
            for index in from..=commit {
                let Some(term) = n.node.entry_term(index) else {
                    continue;
                };
                let in_term = n.node.term();
                let (t, _, by) = *self.committed.entry(index).or_insert((term, in_term, n.id));
                if t != term {
                    return Err(format!(
                        "entry {index} committed with term {t} on node {by} and term {term} \
                         on node {}",
                        n.id
                    ));
                }
            }
            *done = commit;
        }
        for n in nodes.iter().filter(|n| n.node.role() == Role::Leader) {
            let term = n.node.term();
            let from = n.node.first_log_index().saturating_sub(1);
            for (&index, &(t, in_term, by)) in self.committed.range(from..) {
                if in_term <= term && n.node.entry_term(index) != Some(t) {
                    return Err(format!(
                        "leader {} of term {term} lacks entry {index} of term {t}, committed \
                         in term {in_term} on node {by} (it holds term {:?} there)",
                        n.id,
                        n.node.entry_term(index)
                    ));
                }
            }
        }
        Ok(())
    }
}

/// State machine safety (§5.4.3): if a server has applied a log entry at a given index to its
/// state machine, no other server will ever apply a different log entry for the same index.
/// Checked on both what is applied (the entry at each applied index, while the log still holds
/// it) and what it produces (a digest of the state machine after each applied index, which
/// also covers states installed from snapshots).
#[derive(Default)]
pub struct StateMachineSafety {
    /// Applied index → the entry's term and payload, and the node first seen applying it.
    applied: HashMap<LogIndex, (Term, Payload<KvCommand>, NodeId)>,
    /// Applied index → digest of the state after it, and the node first seen there.
    states: HashMap<LogIndex, (u64, NodeId)>,
    /// Per node: the applied index last checked.
    checked: BTreeMap<NodeId, LogIndex>,
}

impl StateMachineSafety {
    /// Records that `node` reached `index` with a state machine whose digest is `digest`.
    pub fn observe_state(
        &mut self,
        node: NodeId,
        index: LogIndex,
        digest: u64,
    ) -> Result<(), String> {
        let (d, by) = *self.states.entry(index).or_insert((digest, node));
        if d != digest {
            return Err(format!(
                "nodes {by} and {node} applied up to {index} but hold different states"
            ));
        }
        Ok(())
    }
}

/// A digest of a state machine's state.
pub fn state_digest(s: &KvStore) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let mut bytes = Vec::new();
    s.snapshot(&mut bytes).expect("an in-memory snapshot");
    bytes.hash(&mut h);
    h.finish()
}

impl Invariant for StateMachineSafety {
    fn name(&self) -> &'static str {
        "state machine safety (§5.4.3)"
    }

    fn check(&mut self, nodes: &[Live<'_>]) -> Result<(), String> {
        forget_down(&mut self.checked, nodes);
        for n in nodes.iter().filter(|n| n.synced) {
            let applied = n.node.applied_index();
            let last = self.checked.get(&n.id).copied();
            if last == Some(applied) {
                continue;
            }
            let from = last.map_or(1, |l| l + 1).max(n.node.first_log_index());
            for index in from..=applied {
                let Some(e) = n.node.entry(index) else {
                    continue;
                };
                let (t, p, by) = self
                    .applied
                    .entry(index)
                    .or_insert_with(|| (e.term, e.payload.clone(), n.id));
                if (*t, &*p) != (e.term, &e.payload) {
                    return Err(format!(
                        "node {} applied {:?} of term {} at {index}; node {by} applied {p:?} of \
                         term {t}",
                        n.id, e.payload, e.term
                    ));
                }
            }
            self.observe_state(n.id, applied, state_digest(n.node.state_machine()))?;
            self.checked.insert(n.id, applied);
        }
        Ok(())
    }
}

// ----- the run -----

/// Whether a node's durable records (as recovery would read them) hold entry `index` of
/// `term`; an index inside their snapshot counts as held (only committed entries are
/// compacted, and those never change).
pub fn durable_holds(records: &[Record<KvCommand>], index: LogIndex, term: Term) -> bool {
    let mut held = None;
    for record in records {
        match record {
            Record::HardState { .. } => {}
            Record::Entries(entries) => {
                if let Some(e) = entries.iter().find(|e| e.index == index) {
                    held = Some(e.term);
                }
            }
            Record::Truncate { from } => {
                if *from <= index {
                    held = None;
                }
            }
            Record::Snapshot { meta, entries, .. } => {
                held = if meta.index >= index {
                    // Compacted: only committed entries are, and they never change.
                    Some(term)
                } else {
                    entries.iter().find(|e| e.index == index).map(|e| e.term)
                };
            }
        }
    }
    held == Some(term)
}

/// The durable-commit property behind the Outbox rule and the leader's parallel append
/// (thesis §10.2.1): whatever commit index a node learned from a leader is held, *durably*, by
/// a majority of `voters`. A leader that counted its own unsynced entries and sent the result
/// early would break it at the first follower that learns such a commit index, crash or not.
/// Checked when a non-leader's commit index grows; for a fixed set of voters (no membership
/// changes, whose majorities move with the log).
pub fn install_durable_commit(sim: &mut Sim<N>, voters: BTreeSet<NodeId>) {
    let membership = Membership {
        voters: voters.clone(),
        voters_outgoing: None,
        learners: BTreeSet::new(),
    };
    let mut checked: BTreeMap<NodeId, LogIndex> = BTreeMap::new();
    sim.add_invariant("durable commit (§10.2.1)", move |view| {
        for (id, node) in view.nodes() {
            let Some(node) = node else { continue };
            let commit = node.commit_index();
            if node.role() == Role::Leader || commit <= checked.get(&id).copied().unwrap_or(0) {
                continue;
            }
            checked.insert(id, commit);
            // Compacted away: committed long since.
            let Some(term) = node.entry_term(commit) else {
                continue;
            };
            let holders: BTreeSet<NodeId> = voters
                .iter()
                .copied()
                .filter(|&v| durable_holds(view.records(v), commit, term))
                .collect();
            if !membership.quorum(&holders) {
                return Err(format!(
                    "node {id} learned commit index {commit} (term {term}), durable only on \
                     {holders:?} of {voters:?}"
                ));
            }
        }
        Ok(())
    });
}
