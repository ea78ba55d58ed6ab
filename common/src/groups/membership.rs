//! Groups added and removed at run time: the host's own requests
//! ([`GroupsRequest::AddGroup`], [`GroupsRequest::RemoveGroup`]), their durable records, their
//! answers, and the clean-up of a removed group's snapshot files once its removal is durable.

use std::collections::BTreeMap;

use super::node::recover_core;
use super::snapshots::GroupSnapshots;
use super::{GroupId, GroupResponse, Groups, GroupsRecord, GroupsRequest};
use crate::snapshot::SnapshotStore;
use crate::{Node, Outbox, RequestId};

impl<N: Node> Groups<N> {
    /// Runs each group's share of a batch collected so far, as one call per group.
    pub(super) fn run_batches(
        &mut self,
        per_slot: &mut BTreeMap<usize, Vec<(RequestId, N::Request)>>,
        out: &mut Outbox<Self>,
    ) {
        for (slot, batch) in std::mem::take(per_slot) {
            self.step(slot, out, |n, o| n.handle_requests(batch, o));
        }
    }

    /// A request for the host itself. Every answer, refusals included, is released with the
    /// step's records (never early): an answer about a group must not be seen before what it
    /// claims (the group's addition or removal, or an earlier one it reports) is durable.
    pub(super) fn handle_host_request(
        &mut self,
        id: RequestId,
        request: GroupsRequest<N::Request>,
        out: &mut Outbox<Self>,
    ) {
        let answer = match request {
            GroupsRequest::AddGroup { group, spec } => self.add_group(group, spec, out),
            GroupsRequest::RemoveGroup { group } => self.remove_group(group, out),
            GroupsRequest::Group(..) => unreachable!("group requests are routed to their group"),
        };
        if !matches!(answer, GroupResponse::Added(_) | GroupResponse::Removed(_)) {
            self.counters.membership_refused += 1;
        }
        out.respond(id, answer);
    }

    /// Starts hosting `group`: builds and recovers its core (recovery has no effects), then
    /// asks for its [`GroupsRecord::Added`] before anything of the core's can be asked for, so
    /// every record and every ordinary message of the group follows it in the log and in
    /// durability.
    fn add_group(
        &mut self,
        group: GroupId,
        spec: Vec<u8>,
        out: &mut Outbox<Self>,
    ) -> GroupResponse<N::Response> {
        if self.index.contains_key(&group) {
            return GroupResponse::AlreadyHosted(group);
        }
        if self.removing.contains(&group) {
            // Its removal could still be lost to a crash, and the old group recovered: the new
            // core must not touch its snapshot files meanwhile.
            return GroupResponse::RemovalPending(group);
        }
        if self.index.len() >= self.groups_max {
            return GroupResponse::TooManyGroups {
                group,
                max: self.groups_max,
            };
        }
        let bad = |reason: String| GroupResponse::BadSpec { group, reason };
        let Some(configure) = &self.configure else {
            return bad("this process adds no groups at run time".into());
        };
        let config = match configure(group, &spec) {
            Ok(c) => c,
            Err(e) => return bad(e),
        };
        let node = match recover_core::<N>(self.snapshots.as_ref(), group, config, Vec::new()) {
            Ok(n) => n,
            Err(e) => return bad(e.to_string()),
        };
        if node.id() != self.id {
            return bad(format!(
                "the group would run as node {}, not as this process's id {}",
                node.id(),
                self.id
            ));
        }
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.ids.push(group);
                self.nodes.push(None);
                self.specs.push(None);
                self.asked.push(Default::default());
                self.checkpoints_reported.push(0);
                self.ids.len() - 1
            }
        };
        self.ids[slot] = group;
        self.nodes[slot] = Some(node);
        self.asked[slot].clear();
        self.checkpoints_reported[slot] = 0;
        self.index.insert(group, slot);
        self.refresh_order();
        self.journal.added(slot);
        self.specs[slot] = Some(spec.clone());
        out.persist(GroupsRecord::Added { group, spec });
        self.counters.groups_added += 1;
        GroupResponse::Added(group)
    }

    /// Stops hosting `group`: drops its core, answers what it held unanswered
    /// [`GroupResponse::Abandoned`], asks for its [`GroupsRecord::Removed`], and forgets its
    /// live records. Its snapshot files go once the record is durable
    /// ([`Groups::removal_durable`]); until then a crash may bring the group back.
    fn remove_group(
        &mut self,
        group: GroupId,
        out: &mut Outbox<Self>,
    ) -> GroupResponse<N::Response> {
        let Some(slot) = self.index.remove(&group) else {
            return GroupResponse::UnknownGroup(group);
        };
        self.nodes[slot] = None;
        self.specs[slot] = None;
        self.refresh_order();
        self.journal.removed(slot, group);
        out.persist(GroupsRecord::Removed { group });
        for id in std::mem::take(&mut self.asked[slot]) {
            self.counters.abandoned_requests += 1;
            out.respond(id, GroupResponse::Abandoned(group));
        }
        self.free.push(slot);
        self.removing.insert(group);
        self.counters.groups_removed += 1;
        GroupResponse::Removed(group)
    }

    /// `group`'s `Removed` record is durable: no recovery can bring it back, so its snapshot
    /// files go. (A failure leaves orphans, which the next recovery removes.)
    pub(super) fn removal_durable(&mut self, group: GroupId) {
        self.removing.remove(&group);
        let Some(store) = &self.snapshots else {
            return;
        };
        let own = GroupSnapshots::new(store.clone(), group);
        let result = own
            .list()
            .and_then(|ids| ids.into_iter().try_for_each(|id| own.remove(id)));
        if let Err(e) = result {
            tracing::warn!(group, error = %e, "groups: a removed group's snapshots not deleted");
        }
    }

    /// Recomputes the hosted slots in group order.
    fn refresh_order(&mut self) {
        self.order.clear();
        self.order.extend(self.index.values().copied());
    }
}
