//! The properties of the Raft paper's Figure 3 as checks over a cluster's live nodes, for any
//! state machine: election safety (§5.2), leader append-only and log matching (§5.3), leader
//! completeness (§5.4) and state machine safety (§5.4.3).
//!
//! Each is an [`Invariant`]: a checker that keeps what it has seen across calls and is shown
//! every live node of one cluster (or of one group, when a process hosts many) after every step
//! of a simulation or a hand-pumped run; `Err` explains a violation. They know nothing of the
//! simulator: the caller gathers the [`Live`] nodes from wherever they run. `raft`'s own
//! simulations check them after every step, and so do the simulations of `kv`'s sharded
//! store, one set per Raft group.
//!
//! ```
//! use raft::kv::KvStore;
//! use raft::testing::invariants::{figure_3, Live};
//! use raft::testing::Cluster;
//!
//! let mut cluster: Cluster<KvStore> = Cluster::new(3, 1);
//! let mut checks = figure_3::<KvStore>();
//! for _ in 0..300 {
//!     cluster.tick_all();
//!     cluster.deliver_all(10_000);
//!     let nodes: Vec<Live<'_, KvStore>> = cluster
//!         .ids()
//!         .into_iter()
//!         .filter_map(|id| {
//!             let synced = cluster.is_flushed(id);
//!             Some(Live { id, node: cluster.node(id)?, synced })
//!         })
//!         .collect();
//!     for check in checks.iter_mut() {
//!         check.check(&nodes).unwrap();
//!     }
//! }
//! assert!(cluster.leader().is_some());
//! ```

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};

use common::NodeId;

use crate::core::RaftNode;
use crate::message::{LogIndex, Payload, Role, Term};
use crate::state_machine::StateMachine;

/// One live node as the invariants see it after a step.
pub struct Live<'a, S: StateMachine> {
    /// Its id.
    pub id: NodeId,
    /// Its state.
    pub node: &'a RaftNode<S>,
    /// Whether every record it asked to persist is synced. Until then its in-memory state may
    /// rest on records a crash loses (a leader alone in its configuration commits its own
    /// unsynced entries); nothing of that state has left the node yet (the Outbox rule), so
    /// the commit and apply checks only look at synced nodes.
    pub synced: bool,
}

/// A safety property checked after every step.
pub trait Invariant<S: StateMachine> {
    /// Its name in failure messages (with the paper's section).
    fn name(&self) -> &'static str;
    /// Checks the live nodes; `Err` explains the violation.
    fn check(&mut self, nodes: &[Live<'_, S>]) -> Result<(), String>;
}

/// An entry as first seen: its term (or the term before it, for log matching), its payload,
/// and the node it was seen on.
type SeenEntry<S> = (Term, Payload<<S as StateMachine>::Command>, NodeId);

/// Every property of Figure 3, fresh, in the paper's order.
pub fn figure_3<S: StateMachine>() -> Vec<Box<dyn Invariant<S>>> {
    vec![
        Box::new(ElectionSafety::default()),
        Box::new(LeaderAppendOnly::default()),
        Box::new(LogMatching::<S>::default()),
        Box::new(LeaderCompleteness::default()),
        Box::new(StateMachineSafety::<S>::default()),
    ]
}

/// Forgets what a cache keyed by node knows of nodes that are down, so a restarted node is
/// read afresh (for invariants that remember what they read of each node).
pub fn forget_down<S: StateMachine, V>(cache: &mut BTreeMap<NodeId, V>, nodes: &[Live<'_, S>]) {
    if cache.len() != nodes.len() || nodes.iter().any(|n| !cache.contains_key(&n.id)) {
        cache.retain(|id, _| nodes.iter().any(|n| n.id == *id));
    }
}

/// Election safety (§5.2): at most one leader can be elected in a given term. The leader of
/// every term ever seen is remembered, across crashes.
#[derive(Default)]
pub struct ElectionSafety {
    /// The leader seen in each term.
    pub leaders: BTreeMap<Term, NodeId>,
}

impl<S: StateMachine> Invariant<S> for ElectionSafety {
    fn name(&self) -> &'static str {
        "election safety (§5.2)"
    }

    fn check(&mut self, nodes: &[Live<'_, S>]) -> Result<(), String> {
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

impl<S: StateMachine> Invariant<S> for LeaderAppendOnly {
    fn name(&self) -> &'static str {
        "leader append-only (§5.3)"
    }

    fn check(&mut self, nodes: &[Live<'_, S>]) -> Result<(), String> {
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
pub struct LogMatching<S: StateMachine> {
    /// `(index, term)` → the term of the entry before it and the payload, as first seen.
    seen: HashMap<(LogIndex, Term), SeenEntry<S>>,
    /// Per node: the snapshot index and the terms of the entries after it, as last read.
    read: BTreeMap<NodeId, (LogIndex, Vec<Term>)>,
}

impl<S: StateMachine> Default for LogMatching<S> {
    fn default() -> Self {
        Self {
            seen: HashMap::new(),
            read: BTreeMap::new(),
        }
    }
}

impl<S: StateMachine> Invariant<S> for LogMatching<S> {
    fn name(&self) -> &'static str {
        "log matching (§5.3)"
    }

    fn check(&mut self, nodes: &[Live<'_, S>]) -> Result<(), String> {
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

impl<S: StateMachine> Invariant<S> for LeaderCompleteness {
    fn name(&self) -> &'static str {
        "leader completeness (§5.4)"
    }

    fn check(&mut self, nodes: &[Live<'_, S>]) -> Result<(), String> {
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
pub struct StateMachineSafety<S: StateMachine> {
    /// Applied index → the entry's term and payload, and the node first seen applying it.
    applied: HashMap<LogIndex, SeenEntry<S>>,
    /// Applied index → digest of the state after it, and the node first seen there.
    states: HashMap<LogIndex, (u64, NodeId)>,
    /// Per node: the applied index last checked.
    checked: BTreeMap<NodeId, LogIndex>,
}

impl<S: StateMachine> Default for StateMachineSafety<S> {
    fn default() -> Self {
        Self {
            applied: HashMap::new(),
            states: HashMap::new(),
            checked: BTreeMap::new(),
        }
    }
}

impl<S: StateMachine> StateMachineSafety<S> {
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

/// A digest of a state machine's state: a hash of its snapshot (`None` if it cannot take
/// one).
pub fn state_digest<S: StateMachine>(s: &S) -> Option<u64> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let mut bytes = Vec::new();
    s.snapshot(&mut bytes).ok()?;
    bytes.hash(&mut h);
    Some(h.finish())
}

impl<S: StateMachine> Invariant<S> for StateMachineSafety<S> {
    fn name(&self) -> &'static str {
        "state machine safety (§5.4.3)"
    }

    fn check(&mut self, nodes: &[Live<'_, S>]) -> Result<(), String> {
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
            let Some(digest) = state_digest(n.node.state_machine()) else {
                return Err(format!(
                    "node {}: its state machine takes no snapshot",
                    n.id
                ));
            };
            self.observe_state(n.id, applied, digest)?;
            self.checked.insert(n.id, applied);
        }
        Ok(())
    }
}
