//! The check that a commit index a follower learned is durable on a majority (for the
//! leader's parallel append). The properties of the paper's Figure 3 themselves live in
//! `raft::testing::invariants`, generic over the state machine.

use super::*;

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
