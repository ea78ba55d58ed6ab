//! The simulation's configuration: [`SimConfig`], its defaults and its validation.

use std::collections::BTreeSet;

use super::net::LinkConfig;
#[cfg(doc)]
use super::{Fault, Network, Outcome, Sim, SimErrorKind, SimView, TraceEvent};
#[cfg(doc)]
use crate::codec::Bincode;
use crate::NodeId;

/// Default for [`SimConfig::tick_interval`].
pub const TICK_INTERVAL_DEFAULT: u64 = 10;
/// Default for [`SimConfig::steps_max`].
pub const STEPS_MAX_DEFAULT: u64 = 2_000_000;
/// Default for [`SimConfig::label_chars_max`].
pub const LABEL_CHARS_MAX_DEFAULT: usize = 40;
/// Default for [`SimConfig::batch_steps_max`].
pub const BATCH_STEPS_MAX_DEFAULT: usize = 64;

/// Configuration of a simulation. Plain data with public fields; [`SimConfig::new`] gives the
/// defaults.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The seed every random choice of the run derives from.
    pub seed: u64,
    /// The cluster's node ids.
    pub nodes: Vec<NodeId>,
    /// Virtual time between two ticks of a node.
    pub tick_interval: u64,
    /// Each tick is late by up to this much (seeded, drawn per tick): timers jitter.
    pub tick_skew: u64,
    /// Each node's clock runs slow by a fixed amount drawn once per node from
    /// `0..=tick_drift_max`: its ticks come every `tick_interval + drift`, so nodes' timeouts
    /// drift apart as real clocks do.
    pub tick_drift_max: u64,
    /// The behaviour of every link at the start (see [`Network`] and [`Fault`] for changes).
    pub link: LinkConfig,
    /// Delay from a node's step to the sync of its records, drawn from
    /// `sync_latency_min..=sync_latency_max`. `0..=0` (the default) releases each step's effects
    /// right after the step; a larger value batches the steps that run meanwhile into one sync
    /// (group commit), and lets a crash hit between step and sync.
    pub sync_latency_min: u64,
    /// See [`SimConfig::sync_latency_min`].
    pub sync_latency_max: u64,
    /// Most steps in one batch: the batch is synced as soon as it holds this many.
    pub batch_steps_max: usize,
    /// When a crash hits before a batch is synced, keep a seeded prefix of its records (a torn
    /// tail, as a write-ahead log allows) instead of losing all of them.
    pub torn_tail: bool,
    /// The run fails with [`SimErrorKind::StepLimit`] after this many steps.
    pub steps_max: u64,
    /// Requests submitted by [`Sim::submit`] that get no answer within this time end as
    /// [`Outcome::TimedOut`]. `None`: wait forever.
    pub request_timeout: Option<u64>,
    /// Round-trip every message through the workspace codec ([`Bincode`]) and deliver the
    /// decoded copy; a failure stops the run. Costs time, so off by default.
    pub wire_check: bool,
    /// Hash message and record contents (encoded with [`Bincode`]) into [`Sim::trace_hash`];
    /// without it only the event skeleton (times, kinds, nodes) is hashed.
    pub hash_contents: bool,
    /// Record a [`TraceEvent`] list for diagrams ([`Sim::trace`]). Costs a `Debug` format per
    /// message, so off by default.
    pub record_trace: bool,
    /// Keep the events nodes publish ([`SimView::events`]).
    pub record_events: bool,
    /// Longest label of a message, request or response in the trace.
    pub label_chars_max: usize,
    /// Client requests that reach a node gather for up to this long and are handed to it
    /// together ([`Node::handle_requests`](crate::Node::handle_requests)), as the driver hands
    /// over the requests it found waiting: a batch is handed over when the window (drawn from
    /// `1..=request_batch_window` for each batch) ends, or before the node's next other input
    /// (a tick, a message, a sync), whichever comes first. 0 (the default) hands each request
    /// over on its own the moment it arrives.
    pub request_batch_window: u64,
}

impl SimConfig {
    /// Defaults for a cluster of `nodes`, with every random choice derived from `seed`.
    pub fn new(seed: u64, nodes: Vec<NodeId>) -> Self {
        Self {
            seed,
            nodes,
            tick_interval: TICK_INTERVAL_DEFAULT,
            tick_skew: 1,
            tick_drift_max: 0,
            link: LinkConfig::default(),
            sync_latency_min: 0,
            sync_latency_max: 0,
            batch_steps_max: BATCH_STEPS_MAX_DEFAULT,
            torn_tail: true,
            steps_max: STEPS_MAX_DEFAULT,
            request_timeout: None,
            wire_check: false,
            hash_contents: true,
            record_trace: false,
            record_events: true,
            label_chars_max: LABEL_CHARS_MAX_DEFAULT,
            request_batch_window: 0,
        }
    }

    /// Checks the configuration, explaining what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.nodes.is_empty() {
            return Err("no nodes".into());
        }
        let distinct: BTreeSet<_> = self.nodes.iter().collect();
        if distinct.len() != self.nodes.len() {
            return Err(format!("duplicate node ids in {:?}", self.nodes));
        }
        if self.tick_interval == 0 {
            return Err("tick_interval must be at least 1".into());
        }
        if self.link.latency_max < self.link.latency_min {
            return Err("link.latency_max < link.latency_min".into());
        }
        if self.sync_latency_max < self.sync_latency_min {
            return Err("sync_latency_max < sync_latency_min".into());
        }
        if self.batch_steps_max == 0 {
            return Err("batch_steps_max must be at least 1".into());
        }
        Ok(())
    }
}
