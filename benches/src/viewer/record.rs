//! Watching a simulation: a [`Recorder`] reads every node's state through a [`Probe`] after
//! each step, and [`Observed`] runs a simulation with its recorder.

use std::collections::BTreeMap;

use common::sim::{Fault, Sim, SimError, SimView};
use common::{Node, NodeId};

use super::{CutChange, NodeState, StateChange};

/// Reads a node's [`NodeState`] from its core.
pub type Probe<N> = fn(&N) -> NodeState;

/// Watches a simulation's nodes and network step by step and keeps their changes.
pub struct Recorder<N: Node> {
    probe: Probe<N>,
    last: BTreeMap<NodeId, NodeState>,
    cut: Option<Vec<[NodeId; 2]>>,
    states: Vec<StateChange>,
    cuts: Vec<CutChange>,
}

impl<N: Node> Recorder<N> {
    /// A recorder that reads each running node with `probe`.
    pub fn new(probe: Probe<N>) -> Self {
        Self {
            probe,
            last: BTreeMap::new(),
            cut: None,
            states: Vec::new(),
            cuts: Vec::new(),
        }
    }

    /// Reads every node and the network now, keeping what changed since the last call.
    pub fn observe(&mut self, view: &SimView<'_, N>) {
        let time = view.now();
        for (node, core) in view.nodes() {
            let state = core.map_or_else(NodeState::down, self.probe);
            if self.last.get(&node) != Some(&state) {
                self.states.push(StateChange {
                    time,
                    node,
                    state: state.clone(),
                });
                self.last.insert(node, state);
            }
        }
        let cut: Vec<[NodeId; 2]> = view.network().cut_links().map(|(a, b)| [a, b]).collect();
        if self.cut.as_ref() != Some(&cut) {
            self.cuts.push(CutChange {
                time,
                cut: cut.clone(),
            });
            self.cut = Some(cut);
        }
    }
}

/// A simulation and its [`Recorder`], run together: the recorder observes after every step,
/// fault, crash and restart. Running through this wrapper changes nothing in the run itself.
pub struct Observed<N: Node> {
    /// The simulation.
    pub sim: Sim<N>,
    recorder: Recorder<N>,
}

impl<N: Node> Observed<N>
where
    N::Request: Clone,
{
    /// Wraps `sim` (not yet run) and observes its first state.
    pub fn new(sim: Sim<N>, probe: Probe<N>) -> Self {
        let mut recorder = Recorder::new(probe);
        recorder.observe(&sim.view());
        Self { sim, recorder }
    }

    /// [`Sim::run_until_cond`], observing after every step.
    pub fn run_until_cond<F>(&mut self, deadline: u64, mut done: F) -> Result<bool, SimError>
    where
        F: FnMut(&SimView<'_, N>) -> bool,
    {
        let recorder = &mut self.recorder;
        self.sim.run_until_cond(deadline, |view| {
            recorder.observe(view);
            done(view)
        })
    }

    /// [`Sim::run_until`], observing after every step.
    pub fn run_until(&mut self, time: u64) -> Result<(), SimError> {
        self.run_until_cond(time, |_| false).map(|_| ())
    }

    /// [`Sim::run_for`], observing after every step.
    pub fn run_for(&mut self, duration: u64) -> Result<(), SimError> {
        self.run_until(self.sim.now().saturating_add(duration))
    }

    /// [`Sim::apply`], then observes.
    pub fn apply(&mut self, fault: Fault) -> Result<(), SimError> {
        let result = self.sim.apply(fault);
        self.recorder.observe(&self.sim.view());
        result
    }

    /// [`Sim::crash`], then observes.
    pub fn crash(&mut self, node: NodeId) -> Result<(), SimError> {
        self.apply(Fault::Crash(node))
    }

    /// [`Sim::restart`], then observes.
    pub fn restart(&mut self, node: NodeId) -> Result<(), SimError> {
        self.apply(Fault::Restart(node))
    }

    /// The node states and cut links recorded so far.
    pub fn recorded(&self) -> (&[StateChange], &[CutChange]) {
        (&self.recorder.states, &self.recorder.cuts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::viewer::{happenings, messages, Fate};

    /// The recorder keeps each node's first state, every change (a crash shows as `down`, a
    /// restart as up again) and every change of the cut links, and nothing else.
    #[test]
    fn observed_runs_record_states_and_cuts() {
        use common::demo::{DemoConfig, DemoNode, DemoRequest};
        use common::sim::SimConfig;
        let mut config = SimConfig::new(1, vec![1, 2, 3]);
        config.record_trace = true;
        let sim: Sim<DemoNode> = Sim::new(config, |id| DemoConfig::new(id, vec![1, 2, 3])).unwrap();
        let probe: Probe<DemoNode> = |n| NodeState {
            log: Some(n.metrics().applied),
            ..NodeState::role("replica")
        };
        let mut run = Observed::new(sim, probe);
        run.sim.submit(5, 1, DemoRequest::Add(1));
        run.run_until(50).unwrap();
        run.apply(Fault::Partition {
            a: vec![1],
            b: vec![2, 3],
        })
        .unwrap();
        run.crash(3).unwrap();
        run.run_for(10).unwrap();
        run.restart(3).unwrap();
        run.apply(Fault::Heal).unwrap();
        let (states, cuts) = run.recorded();
        let of = |node| -> Vec<(bool, Option<u64>)> {
            states
                .iter()
                .filter(|s| s.node == node)
                .map(|s| (s.state.up, s.state.log))
                .collect()
        };
        assert_eq!(of(1), vec![(true, Some(0)), (true, Some(1))]);
        assert_eq!(
            of(3),
            vec![
                (true, Some(0)),
                (true, Some(1)),
                (false, None),
                (true, Some(1))
            ],
            "applied, crashed, recovered its update"
        );
        assert!(states.iter().filter(|s| s.time == 0).count() == 3);
        let cut_sets: Vec<usize> = cuts.iter().map(|c| c.cut.len()).collect();
        assert_eq!(
            cut_sets,
            vec![0, 4, 0],
            "whole, {{1}} cut both ways from {{2, 3}}, healed"
        );
        let trace = run.sim.trace().to_vec();
        assert!(messages(&trace)
            .unwrap()
            .iter()
            .all(|m| m.fate == Fate::Delivered));
        let kinds: Vec<&str> = happenings(&trace).iter().map(|h| h.kind).collect();
        assert!(
            kinds.contains(&"crash") && kinds.contains(&"restart") && kinds.contains(&"network")
        );
    }
}
