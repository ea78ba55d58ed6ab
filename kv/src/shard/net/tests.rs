//! The client protocol's tests: round trips, bad input, limits, and a real node.

use super::wire::BUSY_UNKNOWN;
use super::*;
use crate::shard::{MapCommand, TxCommand, TxOutput};
use common::txn::TxId;

fn round_trip_request(request: ShardRequest) {
    let bytes = encode_frame(&Frame {
        id: 7,
        body: WireRequest::from(&request),
    })
    .unwrap();
    let back = decode_request(&bytes).unwrap();
    assert_eq!(back.id, 7);
    assert_eq!(ShardRequest::from(back.body), request);
}

fn round_trip_response(response: ShardResponse) {
    let bytes = encode_frame(&Frame {
        id: 9,
        body: WireResponse::from(response.clone()),
    })
    .unwrap();
    let back = decode_response(&bytes).unwrap();
    assert_eq!(back.id, 9);
    assert_eq!(back.body.into_response(), Some(response));
}

#[test]
fn every_request_the_agents_send_survives_the_wire() {
    let g = |r| GroupsRequest::Group(3, r);
    round_trip_request(g(Request::Propose(ShardCommand::Map(
        MapCommand::AddProcess(4),
    ))));
    round_trip_request(g(Request::Propose(ShardCommand::Tx(TxCommand::Forget {
        tx: TxId::new(1, 2),
    }))));
    round_trip_request(g(Request::Read(ShardQuery::Kv(KvQuery::Get("k".into())))));
    round_trip_request(g(Request::Read(ShardQuery::Map)));
    round_trip_request(g(Request::Read(ShardQuery::InDoubt)));
    round_trip_request(g(Request::TransferLeadership(2)));
    round_trip_request(g(Request::AddLearner(4)));
    round_trip_request(g(Request::AddVoter(4)));
    round_trip_request(g(Request::RemoveNode(1)));
    round_trip_request(g(Request::ChangeVoters([1, 2, 4].into())));
    round_trip_request(GroupsRequest::AddGroup {
        group: 5,
        spec: vec![1, 2, 3],
    });
    round_trip_request(GroupsRequest::RemoveGroup { group: 5 });
}

#[test]
fn every_answer_survives_the_wire_and_unavailable_is_no_answer() {
    let g = |r| GroupResponse::Group(2, r);
    round_trip_response(g(Response::Applied {
        index: 4,
        output: ShardOutput::Tx(TxOutput::Done),
    }));
    round_trip_response(g(Response::Read(ShardOutput::Kv(KvOutput::Value(None)))));
    round_trip_response(g(Response::TransferStarted));
    round_trip_response(g(Response::MembershipChanged {
        index: 9,
        membership: Box::new(Membership {
            voters: [1, 2].into(),
            learners: [4].into(),
            voters_outgoing: None,
        }),
    }));
    for e in [
        RaftError::NotLeader { leader: Some(2) },
        RaftError::Dropped { index: 3 },
        RaftError::Busy("the learner has not caught up"),
        RaftError::TransferInProgress(2),
        RaftError::Invalid("no such member".into()),
        RaftError::Indeterminate { index: 5 },
        RaftError::TransferTimedOut { target: 3 },
        RaftError::LeadershipLost { leader: None },
    ] {
        round_trip_response(g(Response::Failed(e)));
    }
    for r in [
        GroupResponse::UnknownGroup(1),
        GroupResponse::Abandoned(1),
        GroupResponse::Added(1),
        GroupResponse::Removed(1),
        GroupResponse::AlreadyHosted(1),
        GroupResponse::RemovalPending(1),
        GroupResponse::TooManyGroups { group: 1, max: 8 },
        GroupResponse::BadSpec {
            group: 1,
            reason: "no".into(),
        },
    ] {
        round_trip_response(r);
    }
    assert_eq!(WireResponse::Unavailable("x".into()).into_response(), None);
    // A busy reason this client does not know still reads as busy.
    let unknown: RaftError = WireRaftError::Busy("something new".into()).into();
    assert_eq!(unknown, RaftError::Busy(BUSY_UNKNOWN));
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    assert!(decode_request(&[]).is_err());
    assert!(decode_request(&[0xff; 32]).is_err());
    assert!(decode_response(&[0x01, 0xff, 0xff, 0xff, 0xff, 0xff]).is_err());
}

/// A one-process store (one partition, one replica) serving the protocol on loopback.
async fn one_process() -> (SocketAddr, NodeHandle<ShardHost>) {
    use crate::shard::{Layout, ShardConfig};
    use common::driver::{self, DriverConfig, Persistence};
    use common::transport::memory::MemoryNetwork;
    use common::MemStorage;

    let config = ShardConfig {
        id: 1,
        layout: Layout::new(1, 1).unwrap(),
        map_group: vec![1],
        initial_processes: [1].into(),
        raft: raft::Config::new(1, vec![1]),
    };
    let net = MemoryNetwork::new(1);
    let handle = driver::spawn_recovered::<ShardHost, _, _, _>(
        config.groups_config().unwrap(),
        net.join(1).unwrap(),
        MemStorage::new(),
        Bincode,
        DriverConfig {
            persistence: Persistence::Inline,
            ..DriverConfig::default()
        },
    )
    .await
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(listener, handle.clone()));
    (addr, handle)
}

#[tokio::test]
async fn a_client_reads_and_writes_and_a_bad_frame_closes_only_its_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let (addr, handle) = one_process().await;
    let client = ShardClient::new([(1, addr)].into());
    let mut router = Router::new(vec![1]);
    let put = tokio::time::timeout(Duration::from_secs(20), client.put(&mut router, "k", "v"));
    put.await.unwrap();
    let get = tokio::time::timeout(Duration::from_secs(20), client.get(&mut router, "k"));
    assert_eq!(get.await.unwrap().as_deref(), Some("v"));

    // A frame that does not decode: the server closes that connection (read sees EOF).
    let mut raw = TcpStream::connect(addr).await.unwrap();
    raw.write_all(&[0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff])
        .await
        .unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), raw.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "the connection stays open after garbage");
    // A frame above the limit: closed too.
    let mut raw = TcpStream::connect(addr).await.unwrap();
    let too_long = u32::try_from(FRAME_BYTES_MAX + 1).unwrap().to_be_bytes();
    raw.write_all(&too_long).await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), raw.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "the connection stays open after an oversized frame");
    // Everyone else is still served.
    let get = tokio::time::timeout(Duration::from_secs(20), client.get(&mut router, "k"));
    assert_eq!(get.await.unwrap().as_deref(), Some("v"));
    handle.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_beyond_the_in_flight_limit_wait_their_turn_on_one_connection() {
    let (addr, handle) = one_process().await;
    let client = ShardClient::with_timeout([(1, addr)].into(), Duration::from_secs(20));
    // Wait for the map group's leader, then send four times the limit at once.
    let mut router = Router::new(vec![1]);
    let warm = tokio::time::timeout(Duration::from_secs(20), client.get(&mut router, "k"));
    assert_eq!(warm.await.unwrap(), None);
    let calls: Vec<_> = (0..4 * IN_FLIGHT_MAX)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.call(1, Router::map_request()).await })
        })
        .collect();
    for call in calls {
        let answer = call.await.unwrap();
        assert!(
            matches!(
                answer,
                Some(GroupResponse::Group(
                    MAP_GROUP,
                    Response::Read(ShardOutput::Map(_))
                ))
            ),
            "{answer:?}"
        );
    }
    handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_dead_or_unknown_process_is_no_answer() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let client = ShardClient::new([(1, addr)].into());
    assert_eq!(client.call(1, Router::map_request()).await, None);
    assert_eq!(client.call(9, Router::map_request()).await, None);
}
