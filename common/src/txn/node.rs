//! What an atomic-commit node does around its two roles whatever its protocol: route the
//! records it replays at recovery to the role that wrote them ([`replay_records`]), and reject
//! the messages a role refuses, counted and logged at debug level ([`reject`]).

use super::{AtomicCommit, TxError};
use crate::NodeId;

/// Replays `records`, oldest first, into a node's roles: each record goes to the coordinator
/// (`coordinator` returns false for a record that is not a coordinator's), else to the
/// participant.
pub fn replay_records<R>(
    records: Vec<R>,
    mut coordinator: impl FnMut(&R) -> bool,
    mut participant: impl FnMut(R) -> Result<(), TxError>,
) -> Result<(), TxError> {
    for record in records {
        if !coordinator(&record) {
            participant(record)?;
        }
    }
    Ok(())
}

/// Counts a message that node `node` refused (`result` is why), and says why at debug level:
/// what both protocols do with messages from non-members, out of place or for unknown
/// transactions.
pub fn reject<N: AtomicCommit>(
    result: Result<(), &'static str>,
    rejected: &mut u64,
    node: NodeId,
    from: NodeId,
) {
    if let Err(why) = result {
        *rejected += 1;
        tracing::debug!(protocol = N::NAME, node, from, why, "message rejected");
    }
}
