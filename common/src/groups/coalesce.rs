//! Merging what a batch of the host's steps sends to one peer ([`Node::coalesce`]): each step
//! already sends one [`GroupsMessage`] per peer; a driver batch of several steps (replies to
//! several frames, a tick after them) would still send one per step. Merged, a peer gets one
//! message per batch, up to [`GroupsConfig::parts_per_message_max`] parts.
//!
//! [`Node::coalesce`]: crate::Node::coalesce
//! [`GroupsConfig::parts_per_message_max`]: super::GroupsConfig::parts_per_message_max

use std::collections::BTreeMap;

use super::GroupsMessage;
use crate::NodeId;

/// Merges the messages to each peer, in order, into as few messages as `parts_max` allows.
/// The parts to one peer keep their order (so each group's messages to it do); the order of
/// messages across peers may change.
pub(super) fn merge_per_peer<M>(messages: &mut Vec<(NodeId, GroupsMessage<M>)>, parts_max: usize) {
    if messages.len() < 2 {
        return;
    }
    let mut merged: Vec<(NodeId, GroupsMessage<M>)> = Vec::with_capacity(messages.len());
    // The message each peer's next parts may join: its latest in `merged`.
    let mut open: BTreeMap<NodeId, usize> = BTreeMap::new();
    for (to, message) in messages.drain(..) {
        match open.get(&to) {
            Some(&i) if merged[i].1.parts.len() + message.parts.len() <= parts_max => {
                merged[i].1.parts.extend(message.parts);
            }
            _ => {
                open.insert(to, merged.len());
                merged.push((to, message));
            }
        }
    }
    *messages = merged;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(parts: &[(u64, u32)]) -> GroupsMessage<u32> {
        GroupsMessage {
            parts: parts.to_vec(),
        }
    }

    #[test]
    fn messages_to_one_peer_merge_in_order_within_the_part_limit() {
        let mut messages = vec![
            (2, msg(&[(10, 1), (11, 1)])),
            (3, msg(&[(10, 2)])),
            (2, msg(&[(12, 3)])),
            (3, msg(&[(11, 4)])),
            (2, msg(&[(10, 5), (13, 5)])),
        ];
        merge_per_peer(&mut messages, 4);
        assert_eq!(
            messages,
            vec![
                (2, msg(&[(10, 1), (11, 1), (12, 3)])),
                (3, msg(&[(10, 2), (11, 4)])),
                // Would exceed four parts: a second message to peer 2, after the first.
                (2, msg(&[(10, 5), (13, 5)])),
            ]
        );
    }

    #[test]
    fn a_single_message_or_none_stays_as_it_is() {
        let mut none: Vec<(NodeId, GroupsMessage<u32>)> = Vec::new();
        merge_per_peer(&mut none, 4);
        assert!(none.is_empty());
        let mut one = vec![(2, msg(&[(10, 1)]))];
        merge_per_peer(&mut one, 4);
        assert_eq!(one, vec![(2, msg(&[(10, 1)]))]);
    }
}
