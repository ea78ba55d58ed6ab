//! Faults and fault schedules: written by hand for a named scenario, or drawn from a seed.

use std::hash::Hasher;
use std::sync::Arc;

use super::engine::append;
use super::net::{LinkConfig, Network};
use super::trace::TraceKind;
use super::workload::Outcome;
use super::{Sim, SimErrorKind};
use crate::{DetRng, Node, NodeId};

/// One fault (or repair) applied to a simulation at a point in virtual time.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// The node stops: its volatile state is gone, its unsynced records may be torn (see
    /// [`super::SimConfig::torn_tail`]), its unsent messages and responses are lost, and its
    /// clients' pending requests end with [`super::Outcome::Crashed`]. No-op if already down.
    Crash(NodeId),
    /// The node restarts through [`crate::Node::recover`] with its durable records. No-op if up.
    Restart(NodeId),
    /// The node's next sync that carries records fails (a full disk, a failing device): a
    /// seeded prefix of those records reaches the disk (a short write), nothing else of that
    /// batch leaves the node, and the node stops, as the driver stops a node whose sync failed
    /// (fail-stop). It stays down until a [`Fault::Restart`]. Counted in [`super::Sim::failed_syncs`].
    FailSync(NodeId),
    /// Cuts every link between the groups `a` and `b`, both ways.
    Partition {
        /// One side.
        a: Vec<NodeId>,
        /// The other side.
        b: Vec<NodeId>,
    },
    /// Cuts the links from every node of `from` to every node of `to`; replies still flow.
    OneWay {
        /// Senders whose messages are lost.
        from: Vec<NodeId>,
        /// Receivers that no longer hear from `from`.
        to: Vec<NodeId>,
    },
    /// Cuts `node` off from everyone (both ways).
    Isolate(NodeId),
    /// Partial connectivity: `node` reaches (both ways) only the nodes of `reach`.
    ConnectOnly {
        /// The node whose links change.
        node: NodeId,
        /// The only peers it keeps.
        reach: Vec<NodeId>,
    },
    /// Restores every cut link (latency, loss and duplication settings are kept).
    Heal,
    /// Sets the loss probability of every link without an override.
    Drop(f64),
    /// Sets the duplication probability of every link without an override.
    Duplicate(f64),
    /// Sets the delay range of every link without an override.
    Latency {
        /// Smallest delay.
        min: u64,
        /// Largest delay.
        max: u64,
    },
    /// Overrides one directed link.
    Link {
        /// Sender.
        from: NodeId,
        /// Receiver.
        to: NodeId,
        /// Its new behaviour.
        link: LinkConfig,
    },
    /// Restores the network configured at the start of the run: heals every cut, removes link
    /// overrides and restores the default link's latency, loss and duplication.
    ResetNetwork,
}

/// A schedule of faults: `(virtual time, fault)` pairs.
///
/// ```
/// use common::sim::{Fault, FaultPlan};
/// let plan = FaultPlan::new()
///     .at(100, Fault::Partition { a: vec![1], b: vec![2, 3] })
///     .at(400, Fault::Heal)
///     .at(500, Fault::Crash(2))
///     .at(650, Fault::Restart(2));
/// assert_eq!(plan.faults().len(), 4);
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FaultPlan {
    faults: Vec<(u64, Fault)>,
}

/// Knobs of [`FaultPlan::random`].
#[derive(Clone, Debug, PartialEq)]
pub struct RandomFaults {
    /// Faults start after this time (lets a cluster come up first).
    pub start: u64,
    /// No new fault after this time; at `until` every node is restarted and the network is
    /// reset, so that liveness can be observed in the quiet period that follows.
    pub until: u64,
    /// Mean virtual time between two faults.
    pub mean_gap: u64,
    /// How long a crashed node stays down, or a partition or degraded network lasts:
    /// drawn from `duration_min..=duration_max`.
    pub duration_min: u64,
    /// See [`RandomFaults::duration_min`].
    pub duration_max: u64,
    /// Largest loss probability drawn for a degraded network.
    pub drop_max: f64,
    /// Largest duplication probability drawn for a degraded network.
    pub duplicate_max: f64,
    /// Largest delay drawn for a slow network.
    pub latency_max: u64,
    /// Allow more than a minority of nodes to be down at once (off by default: a majority stays
    /// up, so a majority-based protocol can make progress).
    pub allow_majority_down: bool,
}

impl RandomFaults {
    /// Faults between `start` and `until` with gaps and durations scaled by `intensity`
    /// (`1.0` is a fault every 50 time units on average, lasting 20 to 150).
    pub fn new(start: u64, until: u64, intensity: f64) -> Self {
        let intensity = if intensity.is_finite() && intensity > 0.0 {
            intensity
        } else {
            1.0
        };
        Self {
            start,
            until,
            mean_gap: ((50.0 / intensity) as u64).max(1),
            duration_min: 20,
            duration_max: 150,
            drop_max: 0.3,
            duplicate_max: 0.2,
            latency_max: 30,
            allow_majority_down: false,
        }
    }
}

impl FaultPlan {
    /// An empty plan.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `fault` at virtual time `time`.
    pub fn at(mut self, time: u64, fault: Fault) -> Self {
        self.faults.push((time, fault));
        self
    }

    /// Adds `fault` at virtual time `time` (in place).
    pub fn push(&mut self, time: u64, fault: Fault) {
        self.faults.push((time, fault));
    }

    /// The scheduled faults, in insertion order.
    pub fn faults(&self) -> &[(u64, Fault)] {
        &self.faults
    }

    /// Consumes the plan.
    pub fn into_faults(self) -> Vec<(u64, Fault)> {
        self.faults
    }

    /// A random plan over `nodes`, fully determined by `seed`: crashes followed by restarts,
    /// symmetric and one-way partitions, partial connectivity (a node reaching only some peers,
    /// possibly none), loss, duplication, latency spikes and single slow or lossy directed
    /// links, each repaired after a while (a repair may also end overlapping faults early). Unless
    /// [`RandomFaults::allow_majority_down`], at most a minority of nodes is down at any time.
    /// At [`RandomFaults::until`] everything is repaired.
    pub fn random(seed: u64, nodes: &[NodeId], knobs: &RandomFaults) -> Self {
        let mut rng = DetRng::new(seed ^ 0xFA17_FA17_FA17_FA17);
        let mut plan = FaultPlan::new();
        let n = nodes.len();
        let down_max = if knobs.allow_majority_down {
            n
        } else {
            n.saturating_sub(1) / 2
        };
        // Until when each node is down (plan-time bookkeeping).
        let mut down_until: Vec<Option<u64>> = vec![None; n];
        let mut t = knobs.start;
        loop {
            t += rng.range_inclusive(1, knobs.mean_gap.saturating_mul(2).max(1));
            if t >= knobs.until || n == 0 {
                break;
            }
            for slot in down_until.iter_mut() {
                if slot.is_some_and(|u| u <= t) {
                    *slot = None;
                }
            }
            let duration = rng.range_inclusive(knobs.duration_min, knobs.duration_max);
            let end = (t + duration).min(knobs.until);
            match rng.range_inclusive(0, 8) {
                0 | 1 => {
                    let down = down_until.iter().filter(|d| d.is_some()).count();
                    let up: Vec<usize> = (0..n).filter(|&i| down_until[i].is_none()).collect();
                    if down < down_max {
                        if let Some(i) = rng.index(up.len()).map(|k| up[k]) {
                            down_until[i] = Some(end);
                            plan.push(t, Fault::Crash(nodes[i]));
                            plan.push(end, Fault::Restart(nodes[i]));
                        }
                    }
                }
                kind @ 2..=4 => plan_partition(&mut rng, nodes, kind, t, end, &mut plan),
                kind => plan_link_fault(&mut rng, nodes, knobs, kind, t, end, &mut plan),
            }
        }
        plan.push(knobs.until, Fault::ResetNetwork);
        for &m in nodes {
            plan.push(knobs.until, Fault::Restart(m));
        }
        // Keep the plan sorted by time (stable: same-time faults keep their order).
        plan.faults.sort_by_key(|(t, _)| *t);
        plan
    }
}

/// Draws one connectivity fault for [`FaultPlan::random`], from `t` until `end`: a split into
/// two groups (`kind` 2), one node's outbound links cut (3), or one node reaching only some
/// peers (4).
fn plan_partition(
    rng: &mut DetRng,
    nodes: &[NodeId],
    kind: u64,
    t: u64,
    end: u64,
    plan: &mut FaultPlan,
) {
    let pick = |rng: &mut DetRng| nodes[rng.index(nodes.len()).unwrap_or(0)];
    match kind {
        2 => {
            // A random split into two non-empty groups.
            let mut a = Vec::new();
            let mut b = Vec::new();
            for &m in nodes {
                if rng.chance(0.5) {
                    a.push(m);
                } else {
                    b.push(m);
                }
            }
            if a.is_empty() || b.is_empty() {
                let m = pick(rng);
                a = vec![m];
                b = nodes.iter().copied().filter(|&x| x != m).collect();
            }
            plan.push(t, Fault::Partition { a, b });
            plan.push(end, Fault::Heal);
        }
        3 => {
            let from = pick(rng);
            let to: Vec<NodeId> = nodes.iter().copied().filter(|&x| x != from).collect();
            plan.push(
                t,
                Fault::OneWay {
                    from: vec![from],
                    to,
                },
            );
            plan.push(end, Fault::Heal);
        }
        _ => {
            let node = pick(rng);
            let reach: Vec<NodeId> = nodes
                .iter()
                .copied()
                .filter(|&x| x != node && rng.chance(0.5))
                .collect();
            plan.push(t, Fault::ConnectOnly { node, reach });
            plan.push(end, Fault::Heal);
        }
    }
}

/// Draws one link fault for [`FaultPlan::random`], from `t` until `end`: loss (`kind` 5),
/// duplication (6), a latency spike (7), or one slow, lossy directed link (8).
fn plan_link_fault(
    rng: &mut DetRng,
    nodes: &[NodeId],
    knobs: &RandomFaults,
    kind: u64,
    t: u64,
    end: u64,
    plan: &mut FaultPlan,
) {
    let pick = |rng: &mut DetRng| nodes[rng.index(nodes.len()).unwrap_or(0)];
    match kind {
        5 => {
            let p = rng.range_inclusive(0, 1000) as f64 / 1000.0 * knobs.drop_max;
            plan.push(t, Fault::Drop(p));
            plan.push(end, Fault::ResetNetwork);
        }
        6 => {
            let p = rng.range_inclusive(0, 1000) as f64 / 1000.0 * knobs.duplicate_max;
            plan.push(t, Fault::Duplicate(p));
            plan.push(end, Fault::ResetNetwork);
        }
        7 => {
            let max = rng.range_inclusive(1, knobs.latency_max.max(1));
            plan.push(t, Fault::Latency { min: 1, max });
            plan.push(end, Fault::ResetNetwork);
        }
        _ => {
            // One slow, lossy direction of one link (asymmetric links exist: a bad
            // cable, a full queue on one side).
            let from = pick(rng);
            let others: Vec<NodeId> = nodes.iter().copied().filter(|&x| x != from).collect();
            if let Some(i) = rng.index(others.len()) {
                let latency_max = rng.range_inclusive(1, knobs.latency_max.max(1));
                let drop = rng.range_inclusive(0, 1000) as f64 / 1000.0 * knobs.drop_max;
                let link = LinkConfig {
                    latency_min: 1,
                    latency_max,
                    drop,
                    duplicate: 0.0,
                };
                plan.push(
                    t,
                    Fault::Link {
                        from,
                        to: others[i],
                        link,
                    },
                );
                plan.push(end, Fault::ResetNetwork);
            }
        }
    }
}

impl<N: Node> Sim<N>
where
    N::Request: Clone,
{
    /// Applies one fault or repair to the nodes or the network.
    pub(super) fn apply_fault(&mut self, fault: Fault) -> Result<(), SimErrorKind> {
        self.rec.hasher.write_u8(4);
        match fault {
            Fault::Crash(id) => {
                self.rec.hasher.write_u64(id);
                self.crash_node(id);
                Ok(())
            }
            Fault::Restart(id) => {
                self.rec.hasher.write_u64(id);
                self.restart_node(id)
            }
            Fault::FailSync(id) => {
                self.rec.hasher.write_u64(id);
                if let Some(&i) = self.cluster.index.get(&id) {
                    self.cluster.slots[i].fail_next_sync = true;
                }
                if self.config.record_trace {
                    self.record(TraceKind::Network {
                        description: describe_fault(&Fault::FailSync(id)),
                    });
                }
                Ok(())
            }
            other => {
                self.rec.hasher.write_u8(0x4E);
                if self.config.record_trace {
                    self.record(TraceKind::Network {
                        description: describe_fault(&other),
                    });
                }
                let members = self.config.nodes.clone();
                match other {
                    Fault::Partition { a, b } => self.links.net.partition(&a, &b),
                    Fault::OneWay { from, to } => self.links.net.one_way(&from, &to),
                    Fault::Isolate(n) => self.links.net.connect_only(n, &[], &members),
                    Fault::ConnectOnly { node, reach } => {
                        self.links.net.connect_only(node, &reach, &members)
                    }
                    Fault::Heal => self.links.net.heal(),
                    Fault::Drop(p) => self.links.net.default_link_mut().drop = p,
                    Fault::Duplicate(p) => self.links.net.default_link_mut().duplicate = p,
                    Fault::Latency { min, max } => {
                        let link = self.links.net.default_link_mut();
                        link.latency_min = min;
                        link.latency_max = max.max(min);
                    }
                    Fault::Link { from, to, link } => self.links.net.set_link(from, to, link),
                    Fault::ResetNetwork => self.links.net = Network::new(self.config.link.clone()),
                    Fault::Crash(_) | Fault::Restart(_) | Fault::FailSync(_) => {}
                }
                Ok(())
            }
        }
    }

    pub(super) fn crash_node(&mut self, id: NodeId) {
        let Some(&i) = self.cluster.index.get(&id) else {
            return;
        };
        if self.cluster.slots[i].node.is_none() {
            return;
        }
        let effects = self.cluster.slots[i].outbox.take();
        self.stop_node(i, effects, self.config.torn_tail);
    }

    /// Stops node `i` with `effects` unsynced: a seeded prefix of their records reaches the disk
    /// when `torn` (else none), and nothing else of them leaves the node.
    pub(super) fn stop_node(&mut self, i: usize, effects: crate::Effects<N>, torn: bool) {
        let id = self.cluster.slots[i].id;
        let unsynced = effects.records.len();
        let kept = if torn {
            self.cluster.rng.range_inclusive(0, unsynced as u64) as usize
        } else {
            0
        };
        self.rec.hasher.write_usize(kept);
        for p in effects.records.into_iter().take(kept) {
            append(&mut self.cluster.slots[i].durable, p);
        }
        let slot = &mut self.cluster.slots[i];
        slot.node = None;
        slot.checkpoints_durable = 0;
        slot.records_durable = 0;
        slot.incarnation += 1;
        slot.batch_steps = 0;
        slot.flush_scheduled = false;
        // Requests waiting to be handed over die with the node (their clients learn below).
        slot.requests.clear();
        slot.hand_over_scheduled = false;
        self.record(TraceKind::Crash {
            node: id,
            unsynced_kept: kept,
            unsynced_lost: unsynced - kept,
            effects_lost: effects.messages.len() + effects.responses.len(),
        });
        // Every request in flight at this node now has an unknown outcome.
        let lost: Vec<usize> = self
            .clients
            .inflight
            .iter()
            .filter(|(_, &op)| self.clients.history[op].node == id)
            .map(|(_, &op)| op)
            .collect();
        for op in lost {
            let rid = self.clients.history[op].id;
            self.clients.inflight.remove(&rid);
            self.end_op(op, Outcome::Crashed, "node crashed");
        }
    }

    pub(super) fn restart_node(&mut self, id: NodeId) -> Result<(), SimErrorKind> {
        let Some(&i) = self.cluster.index.get(&id) else {
            return Ok(());
        };
        if self.cluster.slots[i].node.is_some() {
            return Ok(());
        }
        let records = self.cluster.slots[i].durable.clone();
        let count = records.len();
        let snapshots = Arc::new(self.cluster.slots[i].snapshots.clone());
        let node = N::recover_with_snapshots((self.cluster.make_config)(id), records, snapshots)
            .map_err(|e| SimErrorKind::Recover {
                node: id,
                message: e.to_string(),
            })?;
        self.cluster.slots[i].node = Some(node);
        self.record(TraceKind::Restart {
            node: id,
            records: count,
        });
        self.schedule_first_tick(i);
        Ok(())
    }
}

/// A one-line description of a fault, for traces and diagrams.
pub fn describe_fault(fault: &Fault) -> String {
    let list = |v: &[NodeId]| {
        v.iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    match fault {
        Fault::Crash(n) => format!("crash {n}"),
        Fault::Restart(n) => format!("restart {n}"),
        Fault::Partition { a, b } => format!("partition {{{}}} | {{{}}}", list(a), list(b)),
        Fault::OneWay { from, to } => format!("cut {{{}}} -> {{{}}}", list(from), list(to)),
        Fault::Isolate(n) => format!("isolate {n}"),
        Fault::ConnectOnly { node, reach } => {
            format!("{node} reaches only {{{}}}", list(reach))
        }
        Fault::Heal => "heal".to_string(),
        Fault::Drop(p) => format!("drop {p:.2}"),
        Fault::Duplicate(p) => format!("duplicate {p:.2}"),
        Fault::Latency { min, max } => format!("latency {min}..{max}"),
        Fault::Link { from, to, link } => format!(
            "link {from}->{to}: latency {}..{}, drop {:.2}, duplicate {:.2}",
            link.latency_min, link.latency_max, link.drop, link.duplicate
        ),
        Fault::ResetNetwork => "reset network".to_string(),
        Fault::FailSync(n) => format!("the next sync of {n} fails"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_plan_is_deterministic_and_keeps_a_majority_up() {
        let knobs = RandomFaults::new(10, 2000, 2.0);
        let a = FaultPlan::random(7, &[1, 2, 3, 4, 5], &knobs);
        assert_eq!(a, FaultPlan::random(7, &[1, 2, 3, 4, 5], &knobs));
        assert_ne!(a, FaultPlan::random(8, &[1, 2, 3, 4, 5], &knobs));
        let mut down = std::collections::BTreeSet::new();
        let mut max_down = 0;
        for (_, f) in a.faults() {
            match f {
                Fault::Crash(n) => {
                    down.insert(*n);
                }
                Fault::Restart(n) => {
                    down.remove(n);
                }
                _ => {}
            }
            max_down = max_down.max(down.len());
        }
        assert!(
            max_down <= 2,
            "at most a minority of 5 down, saw {max_down}"
        );
        assert!(down.is_empty(), "everyone restarted at the end");
        assert!(a.faults().iter().any(|(_, f)| matches!(f, Fault::Crash(_))));
    }
}
