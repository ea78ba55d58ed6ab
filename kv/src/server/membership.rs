//! Where the replicas are: what a node knows of its cluster ([`Directory`]), the task that keeps
//! the transport's peers in step with the replicated address book, and the cluster a node
//! starts in, from its configuration or learned from a member when it joins ([`Topology`]).

use super::*;

/// What a node knows of where the replicas are: its configuration (or what it learned when it
/// joined) and the replicated address book.
#[derive(Clone)]
pub(super) struct Directory {
    pub(super) protocol: Protocol,
    pub(super) id: NodeId,
    pub(super) listen: SocketAddr,
    pub(super) client_listen: SocketAddr,
    /// The replicas this node started with.
    pub(super) peers: BTreeMap<NodeId, SocketAddr>,
    /// Multi-Paxos's first configuration.
    pub(super) initial: Vec<NodeId>,
    pub(super) book: watch::Receiver<AddressBook>,
}

impl Directory {
    /// What a node knows as it starts: its options and the cluster it starts in, the address
    /// its transport bound, and the address book's channel.
    pub(super) fn new(
        options: &NodeOptions,
        topology: &Topology,
        listen: SocketAddr,
        book: watch::Receiver<AddressBook>,
    ) -> Self {
        Directory {
            protocol: options.protocol,
            id: options.id,
            listen,
            client_listen: options.client_listen,
            peers: topology.peers.clone(),
            initial: match options.protocol {
                Protocol::Raft => Vec::new(),
                Protocol::Paxos => topology.initial.clone(),
            },
            book,
        }
    }

    pub(super) fn info(
        &self,
        leader: Option<NodeId>,
        voters: Vec<NodeId>,
        learners: Vec<NodeId>,
    ) -> MembersInfo {
        let book = self.book.borrow().clone();
        let mut nodes: BTreeMap<NodeId, MemberInfo> = self
            .peers
            .iter()
            .map(|(&id, addr)| {
                (
                    id,
                    MemberInfo {
                        id,
                        peer: addr.to_string(),
                        client: None,
                    },
                )
            })
            .collect();
        for (&id, a) in &book.nodes {
            nodes.insert(
                id,
                MemberInfo {
                    id,
                    peer: a.peer.clone(),
                    client: Some(a.client.clone()),
                },
            );
        }
        nodes.insert(
            self.id,
            MemberInfo {
                id: self.id,
                peer: self.listen.to_string(),
                client: Some(self.client_listen.to_string()),
            },
        );
        for id in &book.removed {
            nodes.remove(id);
        }
        MembersInfo {
            protocol: match self.protocol {
                Protocol::Raft => "raft".into(),
                Protocol::Paxos => "paxos".into(),
            },
            id: self.id,
            leader,
            voters,
            learners,
            initial: self.initial.clone(),
            nodes: nodes.into_values().collect(),
            removed: book.removed.iter().copied().collect(),
        }
    }
}

/// Keeps the transport's peers in step with the replicated address book: registered replicas
/// are added (their addresses resolved now), removed ones dropped. Ends with the node.
pub(super) async fn follow_address_book(
    mut book: watch::Receiver<AddressBook>,
    peers: TcpPeers,
    me: NodeId,
) {
    loop {
        let current = book.borrow_and_update().clone();
        for (&id, addrs) in &current.nodes {
            if id == me || current.removed.contains(&id) {
                continue;
            }
            match tokio::net::lookup_host(addrs.peer.as_str()).await {
                Ok(mut found) => match found.next() {
                    Some(addr) => {
                        if let Err(e) = peers.add(id, addr) {
                            tracing::debug!("peer {id} not added: {e}");
                            return;
                        }
                    }
                    None => tracing::warn!("node {id}: `{}` has no address", addrs.peer),
                },
                Err(e) => tracing::warn!("node {id}: resolving `{}`: {e}", addrs.peer),
            }
        }
        for &id in &current.removed {
            peers.remove(id);
        }
        if book.changed().await.is_err() {
            return;
        }
    }
}

/// Most time a joining replica spends asking members about the cluster.
pub const JOIN_DEADLINE: Duration = Duration::from_secs(30);
/// Pause between two rounds of asking.
const JOIN_RETRY: Duration = Duration::from_millis(200);

/// Who the cluster is as this node starts: from its configuration, or learned from a member.
pub(super) struct Topology {
    pub(super) peers: BTreeMap<NodeId, SocketAddr>,
    pub(super) voters: Vec<NodeId>,
    pub(super) learners: Vec<NodeId>,
    /// Raft: nodes whose messages are accepted before a configuration names them.
    pub(super) known: Vec<NodeId>,
    /// Multi-Paxos's first configuration.
    pub(super) initial: Vec<NodeId>,
}

impl Topology {
    pub(super) async fn learn(options: &NodeOptions) -> Result<Self, ServeError> {
        let me = options.id;
        if options.join.is_empty() {
            let peers: BTreeMap<NodeId, SocketAddr> = options
                .peers
                .iter()
                .filter(|(id, _)| **id != me)
                .map(|(id, a)| (*id, *a))
                .collect();
            let mut members: Vec<NodeId> = peers.keys().copied().collect();
            members.push(me);
            members.sort_unstable();
            return Ok(Topology {
                peers,
                voters: members.clone(),
                learners: Vec::new(),
                known: Vec::new(),
                initial: members,
            });
        }
        let info = ask_members(options).await?;
        let protocol = match options.protocol {
            Protocol::Raft => "raft",
            Protocol::Paxos => "paxos",
        };
        if info.protocol != protocol {
            return Err(ServeError::Config(format!(
                "join: the cluster runs {}, this node is configured for {protocol}",
                info.protocol
            )));
        }
        if info.removed.contains(&me) {
            return Err(ServeError::Config(format!(
                "join: node {me} was removed from the cluster; a removed id is never used again"
            )));
        }
        let mut peers = BTreeMap::new();
        for node in info.nodes.iter().filter(|n| n.id != me) {
            let addr = crate::config::resolve(&format!("join: node {}", node.id), &node.peer)
                .map_err(ServeError::Config)?;
            peers.insert(node.id, addr);
        }
        let mut learners = info.learners.clone();
        if !info.voters.contains(&me) && !learners.contains(&me) {
            learners.push(me);
        }
        Ok(Topology {
            known: info.nodes.iter().map(|n| n.id).collect(),
            peers,
            voters: info.voters,
            learners,
            initial: info.initial,
        })
    }
}

/// Asks the members named by `--join` about the cluster until one answers with this node
/// registered (or removed), within [`JOIN_DEADLINE`].
async fn ask_members(options: &NodeOptions) -> Result<MembersInfo, ServeError> {
    let me = options.id;
    // The seeds' ids are unknown: number them from the top, where no replica's id is.
    let mut seeds = BTreeMap::new();
    for (i, addr) in options.join.iter().enumerate() {
        let addr = crate::config::resolve("join", addr).map_err(ServeError::Config)?;
        seeds.insert(NodeId::MAX - i as NodeId, addr);
    }
    let mut client = KvClient::new(0, seeds).with_deadline(JOIN_DEADLINE);
    if let Some(tls) = &options.tls {
        client = client.with_tls(tls.clone());
    }
    let deadline = Instant::now() + JOIN_DEADLINE;
    // A member that has not applied this node's registration yet answers without it: ask
    // again (the answer comes from the leader when it can be reached) until the deadline.
    loop {
        let why = match client.members().await {
            CallOutcome::Ok(info) if info.nodes.iter().any(|n| n.id == me) => return Ok(info),
            CallOutcome::Ok(info) if info.removed.contains(&me) => return Ok(info),
            CallOutcome::Ok(_) => format!(
                "node {me} is not registered: run `kv-client member add {me} PEER_ADDR \
                 CLIENT_ADDR` first"
            ),
            CallOutcome::Failed(why) | CallOutcome::Unknown(why) => {
                format!("no member answered: {why}")
            }
        };
        if Instant::now() >= deadline {
            return Err(ServeError::Config(format!(
                "join: {why} (tried for {JOIN_DEADLINE:?})"
            )));
        }
        tokio::time::sleep(JOIN_RETRY).await;
    }
}
