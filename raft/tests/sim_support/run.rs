//! One seeded run of a scenario ([`run`]): the cluster, the faults, the nemesis, the clients and
//! the operator, then liveness; what the run did ([`RunStats`], [`Totals`]); and the seed loop
//! every test file goes through ([`check_seeds`], [`check_seeds_then`]).

use super::*;

/// What a run did, to show the runs are not vacuous.
#[derive(Clone, Copy, Debug, Default)]
pub struct RunStats {
    /// Proposals answered `Applied` before the faults stopped.
    pub applied_during_faults: u64,
    /// Reads answered.
    pub reads: u64,
    /// Proposals refused by flow control ([`RaftError::Busy`]).
    pub busy: u64,
    /// Leadership transfers started.
    pub transfers: u64,
    /// Transfers whose target then led (it announced itself leader within
    /// [`TRANSFER_WITHIN`] of the TimeoutNow).
    pub transfers_completed: u64,
    /// Membership changes committed.
    pub membership_changes: u64,
    /// Of which: learners added.
    pub learners_added: u64,
    /// Of which: single-server additions of voters (new nodes or promoted learners).
    pub voters_added: u64,
    /// Of which: single-server removals.
    pub nodes_removed: u64,
    /// Of which: the leader removed itself.
    pub leaders_removed: u64,
    /// Of which: voter sets replaced through joint consensus.
    pub joint_changes: u64,
    /// Spares (nodes outside the initial configuration) that ended as members of the final
    /// leader's configuration with entries applied.
    pub spares_joined: u64,
    /// Snapshots taken or installed (events).
    pub snapshots: u64,
    /// Snapshots installed by InstallSnapshot (a node's log jumped past its end).
    pub installs: u64,
    /// Terms in which a leader was elected.
    pub elections: u64,
    /// Crashes and restarts.
    pub restarts: u64,
    /// Simulation steps.
    pub steps: u64,
}

/// The totals over a file's seeds.
#[derive(Clone, Copy, Debug, Default)]
pub struct Totals {
    /// Seeds run.
    pub seeds: u64,
    /// Runs with at least 5 proposals applied during the faults.
    pub busy_runs: u64,
    /// Sums over the runs.
    pub sum: RunStats,
}

impl Totals {
    fn add(&mut self, s: &RunStats) {
        if s.applied_during_faults >= 5 {
            self.busy_runs += 1;
        }
        let t = &mut self.sum;
        t.applied_during_faults += s.applied_during_faults;
        t.reads += s.reads;
        t.busy += s.busy;
        t.transfers += s.transfers;
        t.transfers_completed += s.transfers_completed;
        t.membership_changes += s.membership_changes;
        t.learners_added += s.learners_added;
        t.voters_added += s.voters_added;
        t.nodes_removed += s.nodes_removed;
        t.leaders_removed += s.leaders_removed;
        t.joint_changes += s.joint_changes;
        t.spares_joined += s.spares_joined;
        t.snapshots += s.snapshots;
        t.installs += s.installs;
        t.elections += s.elections;
        t.restarts += s.restarts;
        t.steps += s.steps;
    }

    /// Whether enough seeds ran to judge the totals (a replay of one seed proves nothing about
    /// the others).
    pub fn is_sweep(&self) -> bool {
        self.seeds >= 20
    }

    /// The faults must leave room for work, or the invariants hold vacuously: most runs
    /// commit proposals while the faults go on, and crashes happen.
    pub fn assert_busy(&self) {
        if !self.is_sweep() {
            return;
        }
        assert!(
            self.busy_runs * 2 >= self.seeds,
            "only {} of {} runs applied 5 proposals during the faults: {self:?}",
            self.busy_runs,
            self.seeds
        );
        assert!(self.sum.restarts >= self.seeds, "too few crashes: {self:?}");
        assert!(
            self.sum.elections >= 2 * self.seeds,
            "too few elections: {self:?}"
        );
        assert!(self.sum.reads >= self.seeds, "too few reads: {self:?}");
    }
}

/// The leader of the highest term among live nodes, if any.
pub fn current_leader(view: &SimView<'_, N>) -> Option<NodeId> {
    view.nodes()
        .filter_map(|(id, n)| n.map(|n| (id, n)))
        .filter(|(_, n)| n.role() == Role::Leader)
        .max_by_key(|(_, n)| n.term())
        .map(|(id, _)| id)
}

/// The current leader, if a quorum of its configuration's voters (itself included) follows it
/// in its term.
pub fn stable_leader(view: &SimView<'_, N>) -> Option<NodeId> {
    let l = current_leader(view)?;
    let leader = view.node(l)?;
    let following: BTreeSet<NodeId> = view
        .nodes()
        .filter_map(|(id, n)| n.map(|n| (id, n)))
        .filter(|(id, n)| *id == l || (n.term() == leader.term() && n.leader() == Some(l)))
        .map(|(id, _)| id)
        .collect();
    leader.membership().quorum(&following).then_some(l)
}

/// Runs seed `seed` of `scenario`: builds the cluster, lets `install` add invariants, drives
/// the workload through the faults, then checks liveness. Returns the simulation (for checks
/// on the history) and what the run did.
pub fn run(
    seed: u64,
    scenario: &Scenario,
    install: &dyn Fn(&mut Sim<N>),
) -> Result<(Sim<N>, RunStats), SimError> {
    let mut rng = DetRng::new(seed ^ 0x5241_4654_5349_4d00);
    let n: u64 = if rng.chance(0.5) { 3 } else { 5 };
    let voters: Vec<NodeId> = (1..=n).collect();
    let spares: Vec<NodeId> = if scenario.membership {
        (n + 1..=n + SPARES).collect()
    } else {
        Vec::new()
    };
    let all: Vec<NodeId> = voters.iter().chain(&spares).copied().collect();

    let mut sim = build_sim(seed, &mut rng, scenario, &voters, &spares)?;
    install(&mut sim);
    if !scenario.membership {
        install_durable_commit(&mut sim, voters.iter().copied().collect());
    }
    let installs = Rc::new(RefCell::new(0u64));
    sim.add_invariant(
        "observer: snapshot installs",
        count_installs(installs.clone()),
    );

    // A spare that joins mid-run: down from the start, restarted from no records later.
    if let Some(&late) = spares.last() {
        sim.crash(late)?;
        let at = rng.range_inclusive(FAULTS_START, scenario.faults_until);
        sim.schedule_fault(at, Fault::Restart(late));
    }

    let mut knobs = RandomFaults::new(FAULTS_START, scenario.faults_until, 1.0);
    knobs.mean_gap = 60;
    knobs.duration_min = 20;
    knobs.duration_max = 600;
    knobs.allow_majority_down = rng.chance(0.2);
    let plan = FaultPlan::random(seed, &all, &knobs);
    let mut restarts = plan
        .faults()
        .iter()
        .filter(|(_, f)| matches!(f, Fault::Crash(_)))
        .count() as u64;
    sim.schedule(plan);

    start_clients(&mut sim, scenario);

    // Every ADMIN_INTERVAL: the nemesis may take the current leader down or cut it off (so
    // elections happen often, not only when a random fault happens to hit the leader), and
    // the operator may ask it for a membership change or a transfer.
    restarts += nemesis_and_operator(&mut sim, &mut rng, scenario, &all)?;
    sim.run_until(scenario.faults_until)?;
    let applied_during_faults = count(&sim, |r| matches!(r, Response::Applied { .. }));

    await_liveness(&mut sim, scenario)?;

    let stats = RunStats {
        installs: *installs.borrow(),
        restarts,
        applied_during_faults,
        ..run_stats(&sim, &spares)
    };
    Ok((sim, stats))
}

/// The simulator of one run: the network and disk drawn from `rng`, and every node's
/// configuration (the same draws for all of them, so the cluster is uniform).
fn build_sim(
    seed: u64,
    rng: &mut DetRng,
    scenario: &Scenario,
    voters: &[NodeId],
    spares: &[NodeId],
) -> Result<Sim<N>, SimError> {
    let all: Vec<NodeId> = voters.iter().chain(spares).copied().collect();
    let mut sc = SimConfig::new(seed, all);
    sc.link.latency_min = 1;
    sc.link.latency_max = 2 + rng.range_inclusive(0, 10);
    sc.link.drop = [0.0, 0.02, 0.05, 0.1][rng.index(4).unwrap_or(0)];
    sc.link.duplicate = [0.0, 0.02, 0.05][rng.index(3).unwrap_or(0)];
    sc.sync_latency_min = 0;
    sc.sync_latency_max = [0, 3, 10][rng.index(3).unwrap_or(0)];
    sc.torn_tail = true;
    sc.request_timeout = Some(REQUEST_TIMEOUT);
    // Half the seeds gather the requests that reach a node close together and hand them over
    // at once, as the driver does (one AppendEntries per batch). A stream of its own, as below.
    sc.request_batch_window = [0, 0, 3, 8][DetRng::new(seed ^ 0x4241_5443_4845_5321)
        .index(4)
        .unwrap_or(0)];
    // The trace hash is not compared here; hashing every message's bytes would cost more than
    // the protocol itself.
    sc.hash_contents = false;

    let pre_vote = rng.chance(0.8);
    let check_quorum = pre_vote || rng.chance(0.5);
    let lease_reads = check_quorum && rng.chance(0.3);
    let append_entries_max = 1 + rng.index(8).unwrap_or(0);
    let inflight_max = 1 + rng.index(4).unwrap_or(0);
    let small_caps = rng.chance(0.2);
    let snapshot_log_entries_max = scenario.snapshot_log_entries_max;
    // Half the seeds let the leader send AppendEntries before its own write is durable
    // (§10.2.1). Drawn from a stream of its own, so every other draw of a seed stays the same.
    let parallel_append = DetRng::new(seed ^ 0x5041_5241_4c4c_454c).chance(0.5);
    // Half the seeds send heartbeats on the node's clock, not from the election (liveness
    // must not depend on which). A stream of its own too.
    let heartbeat_aligned = DetRng::new(seed ^ 0x4842_414c_4947_4e21).chance(0.5);
    let (cluster, joiners) = (voters.to_vec(), spares.to_vec());
    let make = move |id: NodeId| {
        let mut c = Config::new(id, cluster.clone());
        if joiners.contains(&id) {
            // Outside the initial configuration: a learner in its own eyes until a leader's
            // configuration names it.
            c.learners = vec![id];
        }
        c.known_nodes = cluster.iter().chain(&joiners).copied().collect();
        c.seed = seed;
        c.election_timeout_ticks_min = 10;
        c.election_timeout_ticks_max = 20;
        c.heartbeat_interval_ticks = 2;
        c.pre_vote = pre_vote;
        c.check_quorum = check_quorum;
        c.lease_reads = lease_reads;
        c.append_entries_max = append_entries_max;
        c.inflight_max = inflight_max;
        c.parallel_append = parallel_append;
        c.heartbeat_aligned = heartbeat_aligned;
        if small_caps {
            // About three commands of the workload, and two proposals per node.
            c.uncommitted_bytes_max = 48;
            c.proposals_pending_max = 2;
        }
        c.snapshot_log_entries_max = snapshot_log_entries_max;
        c.snapshot_chunk_bytes_max = SNAPSHOT_CHUNK_BYTES;
        c
    };
    Sim::new(sc, move |id| make(id).into())
}

/// Starts the closed-loop clients: reads, puts and (if the scenario allows) appends on three
/// keys, each client following the leader hint of its last answer.
fn start_clients(sim: &mut Sim<N>, scenario: &Scenario) {
    let appends = scenario.appends;
    let mut hint: BTreeMap<u64, NodeId> = BTreeMap::new();
    let mut seq = 0u64;
    sim.closed_loop(
        ClosedLoop {
            clients: CLIENTS,
            start: 100,
            think_min: 0,
            think_max: 30,
            requests_max: REQUESTS_MAX,
            until: scenario.faults_until + 500,
            timeout: Some(REQUEST_TIMEOUT),
        },
        move |rng, ctx| {
            // Follow the leader hint of the client's last answer; otherwise try another node.
            let node = hint.entry(ctx.client).or_insert(1);
            if let Some(last) = ctx.last {
                match last.outcome.response() {
                    Some(Response::Failed(
                        RaftError::NotLeader { leader: Some(l) }
                        | RaftError::LeadershipLost { leader: Some(l) },
                    )) => *node = *l,
                    Some(Response::Applied { .. } | Response::Read(_)) => {}
                    _ => *node = ctx.nodes[rng.index(ctx.nodes.len()).unwrap_or(0)],
                }
            }
            let key = format!("k{}", rng.index(3).unwrap_or(0));
            seq += 1;
            let value = format!("{}.{seq},", ctx.client);
            let req = match rng.index(10).unwrap_or(0) {
                0..=3 => Request::Read(KvQuery::Get(key)),
                4..=6 if appends => Request::Propose(KvCommand::Append { key, value }),
                _ => Request::Propose(KvCommand::Put { key, value }),
            };
            Some((*node, req))
        },
    );
}

/// Every [`ADMIN_INTERVAL`] until the faults stop: the nemesis may take the current leader
/// down or cut it off, and the operator may ask it for a membership change or a transfer.
/// Returns the crashes it caused.
fn nemesis_and_operator(
    sim: &mut Sim<N>,
    rng: &mut DetRng,
    scenario: &Scenario,
    all: &[NodeId],
) -> Result<u64, SimError> {
    let mut restarts = 0;
    let mut t = FAULTS_START;
    while t < scenario.faults_until {
        sim.run_until(t)?;
        t += ADMIN_INTERVAL;
        let Some(leader) = current_leader(&sim.view()) else {
            continue;
        };
        if rng.chance(LEADER_FAULT_CHANCE) {
            let until = (sim.now() + rng.range_inclusive(50, 400)).min(scenario.faults_until);
            if rng.chance(0.5) {
                sim.crash(leader)?;
                restarts += 1;
                sim.schedule_fault(until, Fault::Restart(leader));
            } else {
                sim.apply(Fault::Isolate(leader))?;
                // Heal also ends the random plan's cuts early; its later faults still come.
                sim.schedule_fault(until, Fault::Heal);
            }
            continue;
        }
        if !(scenario.membership || scenario.transfers) || !rng.chance(0.5) {
            continue;
        }
        let target = all[rng.index(all.len()).unwrap_or(0)];
        let transfer = scenario.transfers && (!scenario.membership || rng.chance(0.3));
        let req: Req = if transfer {
            Request::TransferLeadership(target)
        } else {
            match rng.index(4).unwrap_or(0) {
                0 => Request::AddLearner(target),
                1 => Request::AddVoter(target),
                2 => Request::RemoveNode(target),
                _ => {
                    let mut new: BTreeSet<NodeId> =
                        all.iter().copied().filter(|_| rng.chance(0.5)).collect();
                    new.insert(target);
                    Request::ChangeVoters(new)
                }
            }
        };
        sim.submit(sim.now(), leader, req);
    }
    Ok(restarts)
}

/// Liveness once everything is repaired: within [`Scenario::liveness_within`], a leader
/// followed by a quorum, then a final proposal applied.
fn await_liveness(sim: &mut Sim<N>, scenario: &Scenario) -> Result<(), SimError> {
    let deadline = scenario.faults_until + scenario.liveness_within;
    let mut last_refusal = None;
    loop {
        if !sim.run_until_cond(deadline, |v| stable_leader(v).is_some())? {
            let state = describe(sim);
            return Err(sim.fail_now(format!(
                "no leader within {} after the faults stopped; last refusal {last_refusal:?}; \
                 {state}",
                scenario.liveness_within
            )));
        }
        let Some(leader) = stable_leader(&sim.view()) else {
            continue;
        };
        let final_put = Request::Propose(KvCommand::Put {
            key: "final".into(),
            value: "done".into(),
        });
        let id = sim.submit(sim.now(), leader, final_put);
        let ended = sim.run_until_cond(deadline, |v| {
            v.op(id).is_some_and(|op| op.outcome != Outcome::Pending)
        })?;
        let outcome = sim.op(id).map(|op| op.outcome.clone());
        match outcome {
            Some(Outcome::Response(Response::Applied { .. })) => break,
            _ if !ended => {
                let state = describe(sim);
                return Err(sim.fail_now(format!(
                    "the final proposal was not applied within {} after the faults stopped; \
                     {state}",
                    scenario.liveness_within
                )));
            }
            other => {
                last_refusal = other;
                sim.run_for(10)?;
            }
        }
    }
    Ok(())
}

/// What the history and the events of a finished run show it did (the counts the run itself
/// kept, such as crashes, are left at zero for the caller to fill in).
fn run_stats(sim: &Sim<N>, spares: &[NodeId]) -> RunStats {
    let changed = |f: &dyn Fn(&Req, NodeId) -> bool| {
        sim.history()
            .iter()
            .filter(|op| {
                matches!(
                    op.outcome,
                    Outcome::Response(Response::MembershipChanged { .. })
                ) && f(&op.request, op.node)
            })
            .count() as u64
    };
    let final_leader = current_leader(&sim.view()).and_then(|l| sim.node(l));
    let spares_joined = spares
        .iter()
        .filter(|&&s| {
            final_leader.is_some_and(|l| l.membership().is_member(s))
                && sim.node(s).is_some_and(|n| n.applied_index() > 0)
        })
        .count() as u64;
    RunStats {
        transfers_completed: transfers_completed(sim),
        learners_added: changed(&|r, _| matches!(r, Request::AddLearner(_))),
        voters_added: changed(&|r, _| matches!(r, Request::AddVoter(_))),
        nodes_removed: changed(&|r, _| matches!(r, Request::RemoveNode(_))),
        leaders_removed: changed(&|r, at| *r == Request::RemoveNode(at)),
        joint_changes: changed(&|r, _| matches!(r, Request::ChangeVoters(_))),
        spares_joined,
        reads: count(sim, |r| matches!(r, Response::Read(_))),
        busy: count(sim, |r| matches!(r, Response::Failed(RaftError::Busy(_)))),
        transfers: count(sim, |r| matches!(r, Response::TransferStarted)),
        membership_changes: count(sim, |r| matches!(r, Response::MembershipChanged { .. })),
        snapshots: sim
            .events()
            .iter()
            .filter(|(_, _, e)| matches!(e, Event::Snapshot { .. }))
            .count() as u64,
        elections: sim
            .events()
            .iter()
            .filter_map(|(_, node, e)| match e {
                Event::LeaderChanged {
                    term,
                    leader: Some(l),
                } if l == node => Some(*term),
                _ => None,
            })
            .collect::<BTreeSet<Term>>()
            .len() as u64,
        steps: sim.steps(),
        ..RunStats::default()
    }
}

/// Transfers whose target announced itself leader within [`TRANSFER_WITHIN`] of the answer.
fn transfers_completed(sim: &Sim<N>) -> u64 {
    sim.history()
        .iter()
        .filter(|op| matches!(op.outcome, Outcome::Response(Response::TransferStarted)))
        .filter(|op| {
            let (Request::TransferLeadership(target), Some(at)) = (&op.request, op.completed_at)
            else {
                return false;
            };
            sim.events().iter().any(|(time, node, e)| {
                node == target
                    && (at..=at + TRANSFER_WITHIN).contains(time)
                    && matches!(e, Event::LeaderChanged { leader: Some(l), .. } if l == target)
            })
        })
        .count() as u64
}

/// Counts the answers of the history that match `f`.
fn count(sim: &Sim<N>, f: impl Fn(&Resp) -> bool) -> u64 {
    sim.history()
        .iter()
        .filter(|op| op.outcome.response().is_some_and(&f))
        .count() as u64
}

/// Every live node's metrics, for failure messages.
fn describe(sim: &Sim<N>) -> String {
    let view = sim.view();
    let mut s = String::new();
    for (id, n) in view.nodes() {
        match n {
            Some(n) => s.push_str(&format!(
                "[node {id}: {:?} term {} leader {:?} commit {} log {}..={} {:?}] ",
                n.role(),
                n.term(),
                n.leader(),
                n.commit_index(),
                n.first_log_index(),
                n.last_log_index(),
                n.membership()
            )),
            None => s.push_str(&format!("[node {id}: down] ")),
        }
    }
    s
}

/// An observer (never fails) counting snapshots installed through InstallSnapshot: a node's
/// snapshot index jumps past the last entry it held at the previous step.
fn count_installs(installs: Rc<RefCell<u64>>) -> impl FnMut(&SimView<'_, N>) -> Result<(), String> {
    let mut last: BTreeMap<NodeId, LogIndex> = BTreeMap::new();
    move |view| {
        let nodes = live(view);
        forget_down(&mut last, &nodes);
        for n in &nodes {
            let base = n.node.first_log_index() - 1;
            if let Some(&prev) = last.get(&n.id) {
                if base > prev {
                    *installs.borrow_mut() += 1;
                }
            }
            last.insert(n.id, n.node.last_log_index());
        }
        Ok(())
    }
}

/// Runs the seeds chosen by the environment (`SIM_SEED` replays one, `SIM_SEEDS` sets how
/// many; `default` otherwise) through [`run`], then `after` on each finished simulation.
/// Panics with the first failure, which names the seed.
pub fn check_seeds_then(
    default: u64,
    scenario: &Scenario,
    install: impl Fn(&mut Sim<N>),
    mut after: impl FnMut(&mut Sim<N>) -> Result<(), SimError>,
) -> Totals {
    let mut totals = Totals::default();
    let result = run_seeds(default, |seed| {
        let (mut sim, stats) = run(seed, scenario, &install)?;
        after(&mut sim)?;
        totals.add(&stats);
        Ok(())
    });
    match result {
        Ok(report) => totals.seeds = report.seeds,
        Err(e) => panic!("{e}"),
    }
    // Shown with `--nocapture`: what the seeds exercised.
    eprintln!("{totals:?}");
    totals
}

/// [`check_seeds_then`] without a final check.
pub fn check_seeds(default: u64, scenario: &Scenario, install: impl Fn(&mut Sim<N>)) -> Totals {
    check_seeds_then(default, scenario, install, |_| Ok(()))
}
