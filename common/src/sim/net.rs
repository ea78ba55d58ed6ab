//! The simulated network: per-link latency, jitter, loss and duplication, and which directed
//! links are cut.

use std::collections::{BTreeMap, BTreeSet};

use crate::{DetRng, NodeId};

/// Default for [`LinkConfig::latency_min`].
pub const LATENCY_MIN_DEFAULT: u64 = 1;
/// Default for [`LinkConfig::latency_max`].
pub const LATENCY_MAX_DEFAULT: u64 = 5;

/// How one directed link behaves. Virtual time units, probabilities in `0.0..=1.0`.
///
/// Each message's delay is drawn uniformly from `latency_min..=latency_max`; the spread (the
/// jitter) is what reorders messages on a link, as a real network with several paths or a
/// reconnecting transport does.
#[derive(Clone, Debug, PartialEq)]
pub struct LinkConfig {
    /// Smallest one-way delay.
    pub latency_min: u64,
    /// Largest one-way delay (jitter is `latency_max - latency_min`).
    pub latency_max: u64,
    /// Probability that a message is lost.
    pub drop: f64,
    /// Probability that a delivered message arrives a second time (with its own delay).
    pub duplicate: f64,
}

impl Default for LinkConfig {
    fn default() -> Self {
        Self {
            latency_min: LATENCY_MIN_DEFAULT,
            latency_max: LATENCY_MAX_DEFAULT,
            drop: 0.0,
            duplicate: 0.0,
        }
    }
}

impl LinkConfig {
    /// A reliable link with a fixed delay (no jitter, loss or duplication).
    pub fn fixed(latency: u64) -> Self {
        Self {
            latency_min: latency,
            latency_max: latency,
            drop: 0.0,
            duplicate: 0.0,
        }
    }

    /// A delay drawn for one message.
    pub(crate) fn draw_latency(&self, rng: &mut DetRng) -> u64 {
        rng.range_inclusive(self.latency_min, self.latency_max.max(self.latency_min))
    }
}

/// Why the network did not deliver a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// The link is cut (partition, one-way partition, partial connectivity).
    Partitioned,
    /// Lost at random ([`LinkConfig::drop`]).
    Lost,
    /// The destination was down when the message arrived.
    NodeDown,
    /// The destination is not a member of the simulated cluster.
    UnknownNode,
}

/// The network model of a simulation: a default [`LinkConfig`], per-link overrides, and a set
/// of cut directed links. Change it during a run with [`crate::sim::Fault`]s.
#[derive(Clone, Debug, Default)]
pub struct Network {
    default_link: LinkConfig,
    links: BTreeMap<(NodeId, NodeId), LinkConfig>,
    cut: BTreeSet<(NodeId, NodeId)>,
}

impl Network {
    /// A fully connected network whose links all behave like `default_link`.
    pub fn new(default_link: LinkConfig) -> Self {
        Self {
            default_link,
            links: BTreeMap::new(),
            cut: BTreeSet::new(),
        }
    }

    /// How the directed link `from -> to` behaves.
    pub fn link(&self, from: NodeId, to: NodeId) -> &LinkConfig {
        self.links.get(&(from, to)).unwrap_or(&self.default_link)
    }

    /// The configuration of links without an override.
    pub fn default_link(&self) -> &LinkConfig {
        &self.default_link
    }

    /// Mutable access to the configuration of links without an override.
    pub fn default_link_mut(&mut self) -> &mut LinkConfig {
        &mut self.default_link
    }

    /// Overrides the directed link `from -> to`.
    pub fn set_link(&mut self, from: NodeId, to: NodeId, link: LinkConfig) {
        self.links.insert((from, to), link);
    }

    /// Removes every per-link override.
    pub fn clear_link_overrides(&mut self) {
        self.links.clear();
    }

    /// Whether messages from `from` to `to` are currently cut off. A node always reaches itself.
    pub fn is_cut(&self, from: NodeId, to: NodeId) -> bool {
        from != to && self.cut.contains(&(from, to))
    }

    /// Cuts the directed link `from -> to`.
    pub fn cut(&mut self, from: NodeId, to: NodeId) {
        if from != to {
            self.cut.insert((from, to));
        }
    }

    /// Restores the directed link `from -> to`.
    pub fn uncut(&mut self, from: NodeId, to: NodeId) {
        self.cut.remove(&(from, to));
    }

    /// Cuts every link between the two groups, both ways.
    pub fn partition(&mut self, a: &[NodeId], b: &[NodeId]) {
        for &x in a {
            for &y in b {
                self.cut(x, y);
                self.cut(y, x);
            }
        }
    }

    /// Cuts the links from every node of `from` to every node of `to` (the reverse direction
    /// keeps working).
    pub fn one_way(&mut self, from: &[NodeId], to: &[NodeId]) {
        for &x in from {
            for &y in to {
                self.cut(x, y);
            }
        }
    }

    /// Leaves `node` connected (both ways) only to `reach` among `members`.
    pub fn connect_only(&mut self, node: NodeId, reach: &[NodeId], members: &[NodeId]) {
        for &m in members {
            if m == node {
                continue;
            }
            if reach.contains(&m) {
                self.uncut(node, m);
                self.uncut(m, node);
            } else {
                self.cut(node, m);
                self.cut(m, node);
            }
        }
    }

    /// Restores every cut link (link configurations are kept).
    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// The currently cut directed links.
    pub fn cut_links(&self) -> impl Iterator<Item = (NodeId, NodeId)> + '_ {
        self.cut.iter().copied()
    }
}

/// A simulation's network and the stream its random choices (loss, duplication, latency)
/// draw from.
pub(super) struct Links {
    pub(super) net: Network,
    pub(super) rng: DetRng,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_and_heal() {
        let mut n = Network::new(LinkConfig::default());
        n.partition(&[1], &[2, 3]);
        assert!(n.is_cut(1, 2) && n.is_cut(3, 1) && !n.is_cut(2, 3));
        n.heal();
        assert!(!n.is_cut(1, 2));
        n.one_way(&[1], &[2]);
        assert!(n.is_cut(1, 2) && !n.is_cut(2, 1));
        n.heal();
        n.connect_only(1, &[2], &[1, 2, 3]);
        assert!(!n.is_cut(1, 2) && n.is_cut(1, 3) && n.is_cut(3, 1) && !n.is_cut(2, 3));
        assert!(!n.is_cut(1, 1));
    }
}
