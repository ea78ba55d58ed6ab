//! Raft groups added and removed at run time (`GroupsRequest::AddGroup` / `RemoveGroup`) while
//! the simulator injects the faults of the fixed-groups run (crash-restarts with torn unsynced
//! tails, partitions, loss, duplication, failed syncs), with every group's Raft invariants and
//! linearizability checked as there, and the durability of each process's hosted set:
//!
//! - **An answered addition survives**: once `AddGroup { group }` sent to a process is answered
//!   `Added` (or `AlreadyHosted`), that process hosts the group from then on, across any crash,
//!   until a `RemoveGroup` is sent to it.
//! - **An answered removal survives**: once `RemoveGroup` is answered `Removed` (or
//!   `UnknownGroup`), the process does not host the group, across any crash, until an
//!   `AddGroup` is sent to it; once the faults are over, no process's snapshot store holds a
//!   file of the removed group.
//! - **An unanswered one may go either way**: an addition whose process crashed before the
//!   answer (the planned crash a tick or two after the request, before its `Added` record can be
//!   durable) may or may not be hosted after the restart, as the torn tail decides; if it is
//!   not, nothing of the group survived there either (all its records follow `Added`) and
//!   nothing it claimed was released, so the controller adds it afresh and Raft stays safe.
//!
//! Per seed: 3 groups from the configuration; group 10 added early, 12 during the faults, 11
//! added during the faults and removed later, and 13 added right behind that removal (so it
//! takes the removed group's slot while the removed group's last records may still wait for
//! durability); each on its three members, by a controller that retries after the faults
//! until every member answered. Only 11 is removed; 10, 12 and 13 are kept.
//! The durable-commit check of the removed group stops when its removal starts: a member that
//! removed the group durably holds nothing of it any more, by design. Its other checks go on.
//! The clients keep busy past the removal, so some requests the removed group held are
//! answered `Abandoned` (checked as of unknown effect).
//!
//! `SIM_SEED=n` replays seed `n`; `SIM_SEEDS=n` runs more seeds.

use std::cell::RefCell;
use std::collections::BTreeSet as Set;
use std::rc::Rc;

use common::groups::snapshot_group;
use common::snapshot::SnapshotStore;
use common::RequestId;

use super::*;

/// Seeds in the normal test run (sized to stay under a minute in the test profile).
const DYN_SEEDS: u64 = 2_000;
/// Groups of the configuration.
const CONFIGURED: u64 = 3;
/// Groups added at run time.
const ADDED: [GroupId; 4] = [10, 11, 12, 13];
/// The added group that is removed again.
const REMOVED: GroupId = 11;
/// Requests per run at most, all clients together: enough that the clients are still busy
/// when the removal comes, so requests the removed group holds are abandoned.
const DYN_REQUESTS_MAX: u64 = 1_000;
/// After the faults, the controller retries one member's request for this long at most.
const RECONCILE_WITHIN: u64 = 2_000;

/// One request of the controller to a process.
#[derive(Clone, Copy, Debug)]
struct Control {
    id: RequestId,
    node: NodeId,
    group: GroupId,
    add: bool,
}

type Controls = Rc<RefCell<Vec<Control>>>;
/// Additions whose process crashed before answering and came back without the group (their
/// `Added` record torn away), by request.
type Lost = Rc<RefCell<Set<RequestId>>>;

#[derive(Clone, Copy, Debug, Default)]
struct DynTotals {
    seeds: u64,
    /// Additions and removals answered as done.
    added: u64,
    removed: u64,
    /// Additions whose process crashed before answering.
    crashed_adds: u64,
    /// ... of which the process came back without the group.
    lost_adds: u64,
    /// Requests answered `Abandoned` (their group was removed).
    abandoned: u64,
    /// Puts applied in the groups added at run time.
    applied_in_added: u64,
    restarts: u64,
    compacted_runs: u64,
}

#[test]
fn groups_added_and_removed_at_run_time_stay_safe_durable_and_live_under_faults() {
    let mut totals = DynTotals::default();
    let report = run_seeds(DYN_SEEDS, |seed| {
        let mut sim = run_dynamic(seed, &mut totals)?;
        linearizable(&mut sim)
    });
    match report {
        Ok(r) => totals.seeds = r.seeds,
        Err(e) => panic!("{e}"),
    }
    eprintln!("{totals:?}");
    if totals.seeds < 20 {
        return; // a replay of one seed proves nothing about the others
    }
    let t = totals;
    assert!(t.added >= 6 * t.seeds, "too few additions: {t:?}");
    assert!(t.removed >= 2 * t.seeds, "too few removals: {t:?}");
    assert!(
        t.crashed_adds * 10 >= t.seeds,
        "too few crashed additions: {t:?}"
    );
    assert!(
        t.applied_in_added >= 2 * t.seeds,
        "added groups did little: {t:?}"
    );
    assert!(t.restarts >= t.seeds, "too few crashes: {t:?}");
    assert!(
        t.compacted_runs * 3 >= t.seeds,
        "too few compactions: {t:?}"
    );
}

/// One seeded run: the fixed run's faults and clients over configured and added groups, the
/// controller's requests, then reconciliation, liveness of the kept groups and absence of the
/// removed one.
fn run_dynamic(seed: u64, totals: &mut DynTotals) -> Result<Sim<H>, SimError> {
    let mut rng = DetRng::new(seed ^ 0x4459_4e41_4d49_4300);
    let n: u64 = if rng.chance(0.5) { 3 } else { 5 };
    let processes: Vec<NodeId> = (1..=n).collect();
    let all: Vec<GroupId> = (1..=CONFIGURED).chain(ADDED).collect();
    let mut sim = build(seed, &mut rng, n, CONFIGURED, true)?;
    let controls: Controls = Rc::default();
    let removal_starts = schedule_controls(&mut sim, &mut rng, n, &controls);
    for &g in &all {
        let until = if g == REMOVED {
            removal_starts
        } else {
            u64::MAX
        };
        install_group_invariants(&mut sim, g, members(g, n), until);
    }
    let lost: Lost = Rc::default();
    install_membership_invariant(&mut sim, controls.clone(), lost.clone());
    let mut knobs = RandomFaults::new(FAULTS_START, FAULTS_UNTIL, 1.0);
    knobs.mean_gap = 60;
    knobs.duration_min = 20;
    knobs.duration_max = 600;
    knobs.allow_majority_down = rng.chance(0.2);
    let plan = FaultPlan::random(seed, &processes, &knobs);
    totals.restarts += plan
        .faults()
        .iter()
        .filter(|(_, f)| matches!(f, Fault::Crash(_)))
        .count() as u64;
    sim.schedule(plan);
    if rng.chance(0.5) {
        schedule_failed_syncs(&mut sim, &mut rng, n);
    }
    start_clients(&mut sim, n, &all, DYN_REQUESTS_MAX);
    sim.run_until(FAULTS_UNTIL)?;
    for g in ADDED {
        reconcile(&mut sim, &controls, g, g != REMOVED, n)?;
    }
    for g in all.iter().copied().filter(|&g| g != REMOVED) {
        await_group(&mut sim, g, n)?;
    }
    removed_everywhere(&mut sim, REMOVED)?;
    count_dynamic(&sim, &controls, totals);
    totals.lost_adds += lost.borrow().len() as u64;
    Ok(sim)
}

fn control(group: GroupId, add: bool, n: u64) -> GroupsRequest<Req> {
    if add {
        GroupsRequest::AddGroup {
            group,
            spec: spec(&members(group, n)),
        }
    } else {
        GroupsRequest::RemoveGroup { group }
    }
}

fn submit_control(
    sim: &mut Sim<H>,
    controls: &Controls,
    at: u64,
    node: NodeId,
    g: GroupId,
    add: bool,
    n: u64,
) {
    let id = sim.submit(at, node, control(g, add, n));
    controls.borrow_mut().push(Control {
        id,
        node,
        group: g,
        add,
    });
}

/// The controller's plan: each added group on each of its members at a seeded moment, the
/// removal of [`REMOVED`] later; on most seeds, a member crashes a tick or two after one of the
/// additions reaches it, before its record can be durable, and restarts a little later.
/// Returns when the removal starts.
fn schedule_controls(sim: &mut Sim<H>, rng: &mut DetRng, n: u64, controls: &Controls) -> u64 {
    let t10 = rng.range_inclusive(120, 600);
    let t11 = rng.range_inclusive(FAULTS_START, 1_200);
    let t12 = rng.range_inclusive(800, 2_000);
    let t11_removed = rng.range_inclusive(1_500, 2_200);
    // Right behind the removal, so it takes the removed group's slot while that group's last
    // records may still wait for durability.
    let t13 = t11_removed + rng.range_inclusive(0, 40);
    let plan = [
        (10, t10, true),
        (11, t11, true),
        (12, t12, true),
        (REMOVED, t11_removed, false),
        (13, t13, true),
    ];
    let mut adds = Vec::new();
    for (g, t, add) in plan {
        for m in members(g, n) {
            let at = t + rng.range_inclusive(0, 20);
            submit_control(sim, controls, at, m, g, add, n);
            if add {
                adds.push((at, m));
            }
        }
    }
    if rng.chance(0.7) {
        let (at, m) = adds[rng.index(adds.len()).unwrap_or(0)];
        sim.schedule_fault(at + rng.range_inclusive(0, 2), Fault::Crash(m));
        sim.schedule_fault(at + rng.range_inclusive(30, 200), Fault::Restart(m));
    }
    t11_removed
}

/// After every step: each process that is up hosts exactly what the answers it gave promise
/// (the last controller request sent to it for a group, if answered, decides). Notes in `lost`
/// the additions that crashed unanswered and came back without their group.
fn install_membership_invariant(sim: &mut Sim<H>, controls: Controls, lost: Lost) {
    sim.add_invariant("hosted groups", move |view| {
        let controls = controls.borrow();
        let mut last: BTreeMap<(NodeId, GroupId), Control> = BTreeMap::new();
        for c in controls.iter() {
            if view.op(c.id).is_some_and(|op| op.invoked_at <= view.now()) {
                last.insert((c.node, c.group), *c);
            }
        }
        for ((node, g), c) in last {
            let (Some(host), Some(op)) = (view.node(node), view.op(c.id)) else {
                continue;
            };
            let hosts = host.group(g).is_some();
            match op.outcome.response() {
                Some(GroupResponse::Added(_) | GroupResponse::AlreadyHosted(_)) if !hosts => {
                    return Err(format!(
                        "process {node} answered group {g} added, hosts it not"
                    ));
                }
                Some(GroupResponse::Removed(_) | GroupResponse::UnknownGroup(_)) if hosts => {
                    return Err(format!(
                        "process {node} answered group {g} removed, hosts it"
                    ));
                }
                None if op.outcome == Outcome::Crashed && !hosts && c.add => {
                    lost.borrow_mut().insert(c.id);
                }
                _ => {}
            }
        }
        Ok(())
    });
}

/// After the faults: sends group `g`'s addition (or removal) to each of its members until the
/// member answers it done.
fn reconcile(
    sim: &mut Sim<H>,
    controls: &Controls,
    g: GroupId,
    add: bool,
    n: u64,
) -> Result<(), SimError> {
    for m in members(g, n) {
        let deadline = sim.now() + RECONCILE_WITHIN;
        loop {
            submit_control(sim, controls, sim.now(), m, g, add, n);
            let id = controls
                .borrow()
                .last()
                .map(|c| c.id)
                .unwrap_or(RequestId(0));
            sim.run_until_cond(deadline, |v| {
                v.op(id).is_some_and(|op| op.outcome != Outcome::Pending)
            })?;
            let done = match sim.op(id).and_then(|op| op.outcome.response()) {
                Some(GroupResponse::Added(_) | GroupResponse::AlreadyHosted(_)) => add,
                Some(GroupResponse::Removed(_) | GroupResponse::UnknownGroup(_)) => !add,
                _ => false,
            };
            if done {
                break;
            }
            if sim.op(id).is_some_and(|op| op.outcome == Outcome::NodeDown) {
                // A failed sync armed during the faults may stop a process after its last
                // planned restart: the operator restarts it.
                sim.restart(m)?;
            }
            if sim.now() >= deadline {
                let verb = if add { "add" } else { "remove" };
                return Err(sim.fail_now(format!("process {m} did not {verb} group {g}")));
            }
            sim.run_for(20)?;
        }
    }
    Ok(())
}

/// The removed group is hosted nowhere, its removals are durable, and no snapshot store holds
/// a file of it.
fn removed_everywhere(sim: &mut Sim<H>, g: GroupId) -> Result<(), SimError> {
    let mut problems = Vec::new();
    for id in sim.view().ids().to_vec() {
        if let Some(host) = sim.node(id) {
            if host.group(g).is_some() || host.removal_pending(g) {
                problems.push(format!("process {id} still hosts group {g}"));
            }
        }
        if let Some(store) = sim.snapshot_store(id) {
            let files = store.list().unwrap_or_default();
            let left = files
                .into_iter()
                .filter(|&f| matches!(snapshot_group(store, f), Ok(Some(owner)) if owner == g))
                .count();
            if left > 0 {
                problems.push(format!(
                    "process {id} keeps {left} snapshot files of group {g}"
                ));
            }
        }
    }
    match problems.is_empty() {
        true => Ok(()),
        false => Err(sim.fail_now(problems.join("; "))),
    }
}

/// Adds what a finished run did to `totals`.
fn count_dynamic(sim: &Sim<H>, controls: &Controls, totals: &mut DynTotals) {
    for c in controls.borrow().iter() {
        match sim.op(c.id).map(|op| &op.outcome) {
            Some(Outcome::Response(GroupResponse::Added(_))) => totals.added += 1,
            Some(Outcome::Response(GroupResponse::Removed(_))) => totals.removed += 1,
            Some(Outcome::Crashed) if c.add => totals.crashed_adds += 1,
            _ => {}
        }
    }
    for op in sim.history() {
        match op.outcome.response() {
            Some(GroupResponse::Abandoned(_)) => totals.abandoned += 1,
            Some(GroupResponse::Group(g, Response::Applied { .. })) if ADDED.contains(g) => {
                totals.applied_in_added += 1;
            }
            _ => {}
        }
    }
    let view = sim.view();
    totals.compacted_runs += u64::from(view.ids().iter().any(|&id| {
        matches!(
            view.records(id).first(),
            Some(GroupsRecord::Compacted { .. })
        )
    }));
}
