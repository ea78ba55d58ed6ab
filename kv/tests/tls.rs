//! A cluster of real `kv-node` processes with mutual TLS on both ports: each replica has its
//! own certificate from one test authority. Clients with a certificate from that authority are
//! served (the library client, its load generator with a linearizable history, and the
//! `kv-client` program); a client speaking plain TCP and one whose certificate another
//! authority signed get nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::check::check_kv;
use common::transport::tls::testing::TestCa;
use common::transport::tls::TlsConfig;
use kv::load::{Load, LoadOptions};
use kv::net::{CallOutcome, KvClient};
use support::*;

const NAME: &str = "kv.test";

fn write_pair(dir: &Path, stem: &str, (cert, key): (String, String)) {
    std::fs::write(dir.join(format!("{stem}.pem")), cert).unwrap();
    std::fs::write(dir.join(format!("{stem}.key")), key).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// Long on purpose: one scenario against real processes, read top to bottom, over one cluster.
async fn a_tls_cluster_serves_its_clients_and_nobody_else() {
    let pki = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    std::fs::write(pki.path().join("ca.pem"), &ca.ca_pem).unwrap();
    for id in 1..=NODES {
        write_pair(pki.path(), &format!("node-{id}"), ca.issue(NAME));
    }
    write_pair(pki.path(), "client", ca.issue(NAME));
    let file = |name: &str| pki.path().join(name).to_str().unwrap().to_string();
    let (ca_file, client_cert, client_key) =
        (file("ca.pem"), file("client.pem"), file("client.key"));
    let node_cert = file("node-{id}.pem");
    let node_key = file("node-{id}.key");
    let cluster = Cluster::with_args(
        "raft",
        &[
            "--tls-ca",
            &ca_file,
            "--tls-cert",
            &node_cert,
            "--tls-key",
            &node_key,
            "--tls-server-name",
            NAME,
        ],
    );
    let tls = TlsConfig::from_pem_files(
        Path::new(&ca_file),
        Path::new(&client_cert),
        Path::new(&client_key),
        NAME,
    )
    .unwrap();
    let mut probe = KvClient::new(0, cluster.clients.clone()).with_tls(tls.clone());
    for id in 1..=NODES {
        cluster.wait_serving(id, &mut probe).await;
    }
    cluster.leader(&mut probe).await;

    let mut client = KvClient::new(1, cluster.clients.clone())
        .with_tls(tls.clone())
        .with_deadline(WAIT_MAX);
    let put = client
        .write(kv::KvOp::Put {
            key: "secret".into(),
            value: "kept".into(),
        })
        .await;
    assert!(
        matches!(put, CallOutcome::Ok(_)),
        "{put:?}\n{}",
        cluster.logs()
    );
    assert_eq!(
        client.get("secret").await,
        CallOutcome::Ok(kv::KvOutput::Value(Some("kept".into())))
    );

    // The load generator over TLS, with a checked history.
    let load = Load::new().with_tls(tls.clone());
    let options = LoadOptions {
        clients: 4,
        ops_per_client: 25,
        seed: 5,
        first_client_id: 100,
        key_prefix: "tls/".into(),
    };
    tokio::time::timeout(WAIT_MAX, load.run(&cluster.clients, &options))
        .await
        .expect("the load finishes");
    assert_eq!(load.completed.load(Ordering::SeqCst), 100);
    assert!(load.acknowledged.load(Ordering::SeqCst) > 0);
    assert!(check_kv(&load.recorder.history())
        .unwrap()
        .is_linearizable());

    // Plain TCP, and a certificate from another authority: no answer, nothing applied.
    let quick = Duration::from_secs(2);
    let mut plain = KvClient::new(2, cluster.clients.clone()).with_deadline(quick);
    assert!(matches!(plain.get("secret").await, CallOutcome::Failed(_)));
    let stranger = TestCa::new().config(NAME);
    let mut foreign = KvClient::new(3, cluster.clients.clone())
        .with_tls(stranger)
        .with_deadline(quick);
    let forged = foreign
        .write(kv::KvOp::Put {
            key: "secret".into(),
            value: "stolen".into(),
        })
        .await;
    assert!(!matches!(forged, CallOutcome::Ok(_)), "{forged:?}");
    // A client that trusts the cluster's authority (so it accepts the nodes' certificates) but
    // presents a certificate from another: only the nodes' check of client certificates stops
    // it.
    let (cert, key) = TestCa::new().issue(NAME);
    let presenting =
        TlsConfig::from_pem(ca.ca_pem.as_bytes(), cert.as_bytes(), key.as_bytes(), NAME).unwrap();
    let mut presenter = KvClient::new(5, cluster.clients.clone())
        .with_tls(presenting)
        .with_deadline(quick);
    let forged = presenter
        .write(kv::KvOp::Put {
            key: "secret".into(),
            value: "stolen".into(),
        })
        .await;
    assert!(!matches!(forged, CallOutcome::Ok(_)), "{forged:?}");
    assert_eq!(
        client.get("secret").await,
        CallOutcome::Ok(kv::KvOutput::Value(Some("kept".into())))
    );

    // The command-line client with its TLS flags.
    let nodes = cluster
        .clients
        .iter()
        .map(|(id, a)| format!("{id}={a}"))
        .collect::<Vec<_>>()
        .join(",");
    let out = Command::new(env!("CARGO_BIN_EXE_kv-client"))
        .args(["--nodes", &nodes, "--client-id", "4000"])
        .args(["--tls-ca", &ca_file, "--tls-cert", &client_cert])
        .args(["--tls-key", &client_key, "--tls-server-name", NAME])
        .args(["get", "secret"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "kept");
    let out = Command::new(env!("CARGO_BIN_EXE_kv-client"))
        .args(["--nodes", &nodes, "--tls-ca", &ca_file, "get", "secret"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "half a TLS setting is refused");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("tls.cert_file"),
        "{out:?}"
    );
}
