//! `kv-node`'s configuration file, and how it merges with the environment and the flags.
//!
//! Every setting has one name in three places, in this order of precedence:
//!
//! 1. a command-line flag (`--client-listen`);
//! 2. an environment variable (`KV_CLIENT_LISTEN`);
//! 3. the TOML file given with `--config` (`client_listen`).
//!
//! The protocols' timeouts and the storage and client limits live in the file only, in their own
//! tables. A misspelt or misplaced field is an error naming it, not a silent default:
//!
//! ```toml
//! protocol = "raft"
//! id = 1
//! listen = "node-1.internal:7001"      # a host name or an IP address, and a port
//! client_listen = "0.0.0.0:8001"
//! data_dir = "/var/lib/kv/1"
//! key_file = "/etc/kv/cluster.key"
//! metrics_listen = "127.0.0.1:9001"     # GET /metrics and /health
//! worker_threads = 2                   # default: one per CPU; fewer when replicas share CPUs
//!
//! [peers]                              # the other replicas: id = "host:port"
//! 2 = "node-2.internal:7002"
//! 3 = "node-3.internal:7003"
//! # or, for a replica added at run time (`kv-client member add` first), instead of [peers]:
//! # join = ["node-1.internal:8001", "node-2.internal:8002"]   # members' client addresses
//!
//! [driver]
//! tick_ms = 10                         # one protocol tick
//! persist_spin_us = 400                # the log thread looks for writes this long before
//!                                      # it sleeps (0: sleep at once)
//!
//! [raft]                               # in ticks
//! election_timeout_ticks_min = 10
//! election_timeout_ticks_max = 20
//! heartbeat_interval_ticks = 2
//! snapshot_log_entries_max = 100000
//! parallel_append = true               # the leader writes and replicates at once (§10.2.1)
//!
//! [paxos]
//! heartbeat_ticks = 2
//! parallel_accept = true               # the leader accepts and sends Accepts at once
//! snapshot_interval_slots = 4096
//!
//! [client]
//! connections_max = 4096
//! idle_timeout_secs = 30
//! pipeline_max = 256                   # requests in flight per client connection
//!
//! [wal]                                # the write-ahead log (common::wal::WalConfig)
//! segment_bytes_max = 67108864         # a segment file is closed at this size
//! write_buffer_bytes = 1048576         # appends buffered in memory before a write
//! preallocate_bytes = 1048576          # zeros written ahead of the frames (0: off)
//!
//! [storage]                            # after the disk filled up (ENOSPC)
//! probe_interval_ms = 1000             # first pause before probing the data directory
//! probe_interval_max_ms = 10000        # the pause doubles up to this
//! resume_free_bytes = 67108864         # free space needed to resume (one log segment)
//!
//! [tls]                                # mutual TLS on both ports (all four, or none)
//! ca_file = "/etc/kv/ca.pem"           # the cluster's certificate authority
//! cert_file = "/etc/kv/node-1.pem"     # this node's certificate chain
//! key_file = "/etc/kv/node-1.key"      # and its private key
//! server_name = "kv.internal"          # a DNS name every certificate of the cluster carries
//! ```

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::wal::WalConfig;
use common::{NodeId, StorageError};
use serde::Deserialize;

use crate::server::{ClientLimits, Protocol, ResumePolicy};
use common::transport::tls::TlsConfig;

/// Longest configuration file read, in bytes.
pub const CONFIG_FILE_BYTES_MAX: u64 = 64 * 1024;
/// Shortest and longest driver tick accepted, in milliseconds.
pub const TICK_MS_RANGE: (u64, u64) = (1, 10_000);
/// Most worker threads accepted for the node's runtime.
pub const WORKER_THREADS_MAX: usize = 1024;
/// Shortest and longest pause between two probes of a full disk accepted, in milliseconds.
pub const PROBE_INTERVAL_MS_RANGE: (u64, u64) = (1, 3_600_000);

/// The file's contents: every field optional, so that flags and the environment can supply it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `raft` or `paxos`.
    pub protocol: Option<String>,
    /// This replica's id.
    pub id: Option<NodeId>,
    /// Where replicas reach this one (`host:port`).
    pub listen: Option<String>,
    /// Where clients reach this one (`host:port`).
    pub client_listen: Option<String>,
    /// The other replicas: id to `host:port`.
    pub peers: Option<BTreeMap<String, String>>,
    /// Instead of `peers`, for a replica added at run time: client addresses (`host:port`) of
    /// members to learn the cluster from.
    pub join: Option<Vec<String>>,
    /// The write-ahead log's directory.
    pub data_dir: Option<PathBuf>,
    /// File holding the cluster key.
    pub key_file: Option<PathBuf>,
    /// Where to serve metrics and the health check (`host:port`).
    pub metrics_listen: Option<String>,
    /// Threads of the node's async runtime (network, protocol, client connections; the log is
    /// written by a thread of its own). Default: one per CPU.
    pub worker_threads: Option<usize>,
    /// The driver.
    #[serde(default)]
    pub driver: DriverSection,
    /// Raft's timeouts and snapshots.
    #[serde(default)]
    pub raft: RaftSection,
    /// Multi-Paxos's timeouts and snapshots.
    #[serde(default)]
    pub paxos: PaxosSection,
    /// The client port.
    #[serde(default)]
    pub client: ClientSection,
    /// The write-ahead log.
    #[serde(default)]
    pub wal: WalSection,
    /// What the node does after its disk filled up.
    #[serde(default)]
    pub storage: StorageSection,
    /// Mutual TLS on both ports.
    #[serde(default)]
    pub tls: TlsSection,
}

/// `[tls]`: the files of [`TlsConfig::from_pem_files`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// The cluster's certificate authority (PEM).
    pub ca_file: Option<PathBuf>,
    /// This node's certificate chain (PEM).
    pub cert_file: Option<PathBuf>,
    /// This node's private key (PEM).
    pub key_file: Option<PathBuf>,
    /// The DNS name every certificate of the cluster carries.
    pub server_name: Option<String>,
}

/// The TLS flags `kv-node` and `kv-client` share (each also an environment variable).
#[derive(clap::Args, Clone, Debug, Default)]
pub struct TlsArgs {
    /// Mutual TLS: the cluster's CA certificate (PEM). With --tls-cert, --tls-key and
    /// --tls-server-name.
    #[arg(long, env = "KV_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// This program's certificate chain, signed by the cluster's CA (PEM).
    #[arg(long, env = "KV_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// This program's private key (PEM).
    #[arg(long, env = "KV_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// The DNS name every certificate of the cluster carries.
    #[arg(long, env = "KV_TLS_SERVER_NAME")]
    pub tls_server_name: Option<String>,
}

impl From<TlsArgs> for TlsSection {
    fn from(a: TlsArgs) -> Self {
        TlsSection {
            ca_file: a.tls_ca,
            cert_file: a.tls_cert,
            key_file: a.tls_key,
            server_name: a.tls_server_name,
        }
    }
}

impl TlsSection {
    /// Fills the unset fields from `other` (the file under the flags).
    pub fn or(self, other: &TlsSection) -> TlsSection {
        TlsSection {
            ca_file: self.ca_file.or_else(|| other.ca_file.clone()),
            cert_file: self.cert_file.or_else(|| other.cert_file.clone()),
            key_file: self.key_file.or_else(|| other.key_file.clone()),
            server_name: self.server_name.or_else(|| other.server_name.clone()),
        }
    }

    /// `None` when no field is set; the loaded configuration when all are; otherwise an error
    /// naming the first missing field.
    pub fn load(&self) -> Result<Option<TlsConfig>, String> {
        let TlsSection {
            ca_file,
            cert_file,
            key_file,
            server_name,
        } = self;
        if ca_file.is_none() && cert_file.is_none() && key_file.is_none() && server_name.is_none() {
            return Ok(None);
        }
        let missing = |name: &str| format!("tls.{name} is not set: TLS needs all four fields");
        let ca = ca_file.as_ref().ok_or_else(|| missing("ca_file"))?;
        let cert = cert_file.as_ref().ok_or_else(|| missing("cert_file"))?;
        let key = key_file.as_ref().ok_or_else(|| missing("key_file"))?;
        let name = server_name.as_ref().ok_or_else(|| missing("server_name"))?;
        TlsConfig::from_pem_files(ca, cert, key, name)
            .map(Some)
            .map_err(|e| format!("tls: {e}"))
    }
}

/// `[driver]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriverSection {
    /// Milliseconds per protocol tick.
    pub tick_ms: Option<u64>,
    /// Microseconds the write-ahead log's thread keeps checking for the next batch of writes
    /// before it sleeps ([`common::driver::DriverConfig::persist_spin`]).
    pub persist_spin_us: Option<u64>,
}

/// `[raft]`: fields of [`raft::Config`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RaftSection {
    /// [`raft::Config::election_timeout_ticks_min`].
    pub election_timeout_ticks_min: Option<u64>,
    /// [`raft::Config::election_timeout_ticks_max`].
    pub election_timeout_ticks_max: Option<u64>,
    /// [`raft::Config::heartbeat_interval_ticks`].
    pub heartbeat_interval_ticks: Option<u64>,
    /// [`raft::Config::snapshot_log_entries_max`].
    pub snapshot_log_entries_max: Option<u64>,
    /// [`raft::Config::parallel_append`] (on by default in `kv-node`, whose driver reports
    /// durability).
    pub parallel_append: Option<bool>,
}

/// `[paxos]`: fields of [`paxos::Config`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaxosSection {
    /// [`paxos::Config::heartbeat_ticks`].
    pub heartbeat_ticks: Option<u64>,
    /// [`paxos::Config::parallel_accept`] (on by default in `kv-node`, whose driver reports
    /// durability).
    pub parallel_accept: Option<bool>,
    /// [`paxos::Config::snapshot_interval_slots`].
    pub snapshot_interval_slots: Option<u64>,
}

/// Largest accepted `client.pipeline_max`: each request in flight holds up to a frame of
/// [`crate::net::CLIENT_FRAME_BYTES_MAX`] bytes.
pub const PIPELINE_MAX_LIMIT: usize = 4_096;

/// `[client]`: [`ClientLimits`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSection {
    /// [`ClientLimits::connections_max`].
    pub connections_max: Option<usize>,
    /// [`ClientLimits::idle_timeout`], in seconds.
    pub idle_timeout_secs: Option<u64>,
    /// [`ClientLimits::pipeline_max`].
    pub pipeline_max: Option<usize>,
}

/// `[wal]`: fields of [`WalConfig`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WalSection {
    /// [`WalConfig::segment_bytes_max`].
    pub segment_bytes_max: Option<u64>,
    /// [`WalConfig::write_buffer_bytes`].
    pub write_buffer_bytes: Option<usize>,
    /// [`WalConfig::preallocate_bytes`].
    pub preallocate_bytes: Option<u64>,
}

/// `[storage]`: [`ResumePolicy`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSection {
    /// [`ResumePolicy::probe_interval`], in milliseconds.
    pub probe_interval_ms: Option<u64>,
    /// [`ResumePolicy::probe_interval_max`], in milliseconds.
    pub probe_interval_max_ms: Option<u64>,
    /// [`ResumePolicy::free_bytes_min`].
    pub resume_free_bytes: Option<u64>,
}

impl FileConfig {
    /// Reads and parses `path` (at most [`CONFIG_FILE_BYTES_MAX`] bytes).
    pub fn read(path: &Path) -> Result<Self, String> {
        let shown = path.display();
        let meta = std::fs::metadata(path).map_err(|e| format!("config file {shown}: {e}"))?;
        if meta.len() > CONFIG_FILE_BYTES_MAX {
            return Err(format!(
                "config file {shown}: longer than {CONFIG_FILE_BYTES_MAX} bytes"
            ));
        }
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("config file {shown}: {e}"))?;
        Self::parse(&text).map_err(|e| format!("config file {shown}: {e}"))
    }

    /// Parses TOML text; the error names the offending field and line.
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_string())
    }

    /// Applies the protocol settings of the file to a Raft configuration.
    pub fn tune_raft(&self, c: &mut raft::Config) {
        let r = &self.raft;
        set(
            &mut c.election_timeout_ticks_min,
            r.election_timeout_ticks_min,
        );
        set(
            &mut c.election_timeout_ticks_max,
            r.election_timeout_ticks_max,
        );
        set(&mut c.heartbeat_interval_ticks, r.heartbeat_interval_ticks);
        set(&mut c.snapshot_log_entries_max, r.snapshot_log_entries_max);
        set(&mut c.parallel_append, r.parallel_append);
    }

    /// Applies the protocol settings of the file to a Multi-Paxos configuration.
    pub fn tune_paxos(&self, c: &mut paxos::Config) {
        set(&mut c.heartbeat_ticks, self.paxos.heartbeat_ticks);
        set(&mut c.parallel_accept, self.paxos.parallel_accept);
        set(
            &mut c.snapshot_interval_slots,
            self.paxos.snapshot_interval_slots,
        );
    }

    /// The driver's tick.
    pub fn tick(&self) -> Result<Option<Duration>, String> {
        match self.driver.tick_ms {
            None => Ok(None),
            Some(ms) if (TICK_MS_RANGE.0..=TICK_MS_RANGE.1).contains(&ms) => {
                Ok(Some(Duration::from_millis(ms)))
            }
            Some(ms) => Err(format!(
                "driver.tick_ms = {ms}: must be between {} and {}",
                TICK_MS_RANGE.0, TICK_MS_RANGE.1
            )),
        }
    }

    /// How long the write-ahead log's thread checks for the next batch before it sleeps.
    pub fn persist_spin(&self) -> Result<Option<Duration>, String> {
        let max = common::driver::PERSIST_SPIN_MAX;
        match self.driver.persist_spin_us {
            None => Ok(None),
            Some(us) if Duration::from_micros(us) <= max => Ok(Some(Duration::from_micros(us))),
            Some(us) => Err(format!(
                "driver.persist_spin_us = {us}: must be at most {}",
                max.as_micros()
            )),
        }
    }

    /// When and how the node resumes after its disk filled up: the defaults, changed where the
    /// file says.
    pub fn resume_policy(&self) -> Result<ResumePolicy, String> {
        let mut policy = ResumePolicy::default();
        let (min, max) = PROBE_INTERVAL_MS_RANGE;
        let ms = |name: &str, value: u64| {
            if (min..=max).contains(&value) {
                Ok(Duration::from_millis(value))
            } else {
                Err(format!(
                    "storage.{name} = {value}: must be between {min} and {max}"
                ))
            }
        };
        if let Some(v) = self.storage.probe_interval_ms {
            policy.probe_interval = ms("probe_interval_ms", v)?;
            // A shorter first pause than the default maximum lowers nothing else; a longer one
            // raises the maximum with it unless the file sets both.
            policy.probe_interval_max = policy.probe_interval_max.max(policy.probe_interval);
        }
        if let Some(v) = self.storage.probe_interval_max_ms {
            policy.probe_interval_max = ms("probe_interval_max_ms", v)?;
        }
        if policy.probe_interval_max < policy.probe_interval {
            return Err(format!(
                "storage.probe_interval_max_ms ({} ms) is below storage.probe_interval_ms ({} ms)",
                policy.probe_interval_max.as_millis(),
                policy.probe_interval.as_millis()
            ));
        }
        if let Some(bytes) = self.storage.resume_free_bytes {
            policy.free_bytes_min = bytes;
        }
        Ok(policy)
    }

    /// The write-ahead log's configuration for `dir` (the node's `data_dir`): the defaults,
    /// changed where the file says, and checked.
    pub fn wal_config(&self, dir: &Path) -> Result<WalConfig, String> {
        // The log's own check would name its field `dir`, which is no setting of this file.
        if dir.as_os_str().is_empty() {
            return Err("data_dir must not be empty".into());
        }
        let mut c = WalConfig::new(dir);
        set(&mut c.segment_bytes_max, self.wal.segment_bytes_max);
        set(&mut c.write_buffer_bytes, self.wal.write_buffer_bytes);
        set(&mut c.preallocate_bytes, self.wal.preallocate_bytes);
        c.validate().map_err(|e| match e {
            // Its messages start with the field's name.
            StorageError::Config(why) => format!("wal.{why}"),
            other => format!("wal: {other}"),
        })?;
        Ok(c)
    }

    /// The client port's limits: the defaults, changed where the file says.
    pub fn client_limits(&self) -> Result<ClientLimits, String> {
        let mut limits = ClientLimits::default();
        if let Some(n) = self.client.connections_max {
            if n == 0 {
                return Err("client.connections_max must be at least 1".into());
            }
            limits.connections_max = n;
        }
        if let Some(secs) = self.client.idle_timeout_secs {
            if secs == 0 {
                return Err("client.idle_timeout_secs must be at least 1".into());
            }
            limits.idle_timeout = Duration::from_secs(secs);
        }
        if let Some(n) = self.client.pipeline_max {
            if !(1..=PIPELINE_MAX_LIMIT).contains(&n) {
                return Err(format!(
                    "client.pipeline_max must be from 1 to {PIPELINE_MAX_LIMIT}"
                ));
            }
            limits.pipeline_max = n;
        }
        Ok(limits)
    }
}

fn set<T>(field: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *field = v;
    }
}

/// The first of `flag` (which clap already filled from the environment) and `file`, or an error
/// saying where `name` can be given.
pub fn required<T>(name: &str, env: &str, flag: Option<T>, file: Option<T>) -> Result<T, String> {
    flag.or(file).ok_or_else(|| {
        format!(
            "`{name}` is not set: give --{} or {env}, or set `{name}` in the --config file",
            name.replace('_', "-")
        )
    })
}

/// Parses a protocol name.
pub fn protocol(name: &str) -> Result<Protocol, String> {
    match name {
        "raft" => Ok(Protocol::Raft),
        "paxos" => Ok(Protocol::Paxos),
        other => Err(format!("protocol `{other}`: expected `raft` or `paxos`")),
    }
}

/// The runtime's worker threads, when set: between 1 and [`WORKER_THREADS_MAX`].
pub fn worker_threads(value: Option<usize>) -> Result<Option<usize>, String> {
    match value {
        Some(n) if !(1..=WORKER_THREADS_MAX).contains(&n) => Err(format!(
            "worker_threads = {n}: must be between 1 and {WORKER_THREADS_MAX}"
        )),
        n => Ok(n),
    }
}

/// Resolves `host:port` (a host name or an IP address) to its first address; `field` names the
/// setting in the error.
pub fn resolve(field: &str, text: &str) -> Result<SocketAddr, String> {
    text.to_socket_addrs()
        .map_err(|e| format!("{field} `{text}`: {e}"))?
        .next()
        .ok_or_else(|| format!("{field} `{text}`: the name has no address"))
}

/// Resolves a table of peers (`id = "host:port"`).
pub fn resolve_peers(
    peers: &BTreeMap<String, String>,
) -> Result<BTreeMap<NodeId, SocketAddr>, String> {
    let mut out = BTreeMap::new();
    for (id, addr) in peers {
        let parsed: NodeId = id
            .trim()
            .parse()
            .map_err(|e| format!("peers.{id}: not a node id: {e}"))?;
        out.insert(parsed, resolve(&format!("peers.{id}"), addr)?);
    }
    Ok(out)
}

/// Parses the flag form of the peers, `id=host:port,id=host:port`.
pub fn parse_peers(text: &str) -> Result<BTreeMap<NodeId, SocketAddr>, String> {
    let mut table = BTreeMap::new();
    for part in text.split(',').filter(|p| !p.trim().is_empty()) {
        let (id, addr) = part
            .split_once('=')
            .ok_or_else(|| format!("peers `{part}`: expected id=host:port"))?;
        if table
            .insert(id.trim().to_string(), addr.trim().to_string())
            .is_some()
        {
            return Err(format!("peers: node {} named twice", id.trim()));
        }
    }
    resolve_peers(&table)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
protocol = "paxos"
id = 2
listen = "localhost:7002"
client_listen = "127.0.0.1:8002"
data_dir = "/tmp/kv/2"
worker_threads = 1

[peers]
1 = "127.0.0.1:7001"
3 = "localhost:7003"

[driver]
tick_ms = 5
persist_spin_us = 200

[raft]
election_timeout_ticks_min = 30
election_timeout_ticks_max = 60

[paxos]
heartbeat_ticks = 4

[client]
connections_max = 10
idle_timeout_secs = 5
pipeline_max = 8

[wal]
segment_bytes_max = 33554432
write_buffer_bytes = 65536
preallocate_bytes = 0

[storage]
probe_interval_ms = 200
probe_interval_max_ms = 800
resume_free_bytes = 1048576
"#;

    #[test]
    fn a_full_file_parses_and_tunes_both_protocols() {
        let f = FileConfig::parse(FULL).unwrap();
        assert_eq!(f.id, Some(2));
        assert_eq!(
            protocol(f.protocol.as_deref().unwrap()),
            Ok(Protocol::Paxos)
        );
        assert_eq!(f.tick(), Ok(Some(Duration::from_millis(5))));
        assert_eq!(f.persist_spin(), Ok(Some(Duration::from_micros(200))));
        assert_eq!(f.worker_threads, Some(1));
        let peers = resolve_peers(f.peers.as_ref().unwrap()).unwrap();
        assert_eq!(peers.len(), 2);
        assert!(peers[&3].ip().is_loopback(), "host names resolve");
        assert_eq!(resolve("listen", "localhost:7002").unwrap().port(), 7002);
        let mut r = raft::Config::new(2, vec![1, 2, 3]);
        f.tune_raft(&mut r);
        assert_eq!(
            (r.election_timeout_ticks_min, r.election_timeout_ticks_max),
            (30, 60)
        );
        assert!(r.validate().is_ok());
        let mut p = paxos::Config::new(2, vec![1, 2, 3]);
        f.tune_paxos(&mut p);
        assert_eq!(p.heartbeat_ticks, 4);
        let limits = f.client_limits().unwrap();
        assert_eq!(limits.connections_max, 10);
        assert_eq!(limits.idle_timeout, Duration::from_secs(5));
        assert_eq!(limits.pipeline_max, 8);
        let resume = f.resume_policy().unwrap();
        assert_eq!(resume.probe_interval, Duration::from_millis(200));
        assert_eq!(resume.probe_interval_max, Duration::from_millis(800));
        assert_eq!(resume.free_bytes_min, 1 << 20);
        let wal = f.wal_config(Path::new("/var/lib/kv")).unwrap();
        assert_eq!(
            (
                wal.segment_bytes_max,
                wal.write_buffer_bytes,
                wal.preallocate_bytes
            ),
            (32 << 20, 64 << 10, 0)
        );
        assert_eq!(
            FileConfig::default().wal_config(Path::new("/d")),
            Ok(WalConfig::new("/d"))
        );
        assert_eq!(
            FileConfig::default().resume_policy(),
            Ok(ResumePolicy::default())
        );
    }

    #[test]
    fn mistakes_are_errors_that_name_the_field() {
        let e = FileConfig::parse("idd = 1").unwrap_err();
        assert!(e.contains("idd"), "{e}");
        let e = FileConfig::parse("[raft]\nelection_timeout = 3").unwrap_err();
        assert!(e.contains("election_timeout"), "{e}");
        let e = FileConfig::parse("id = \"one\"").unwrap_err();
        assert!(e.contains("id"), "{e}");
        let e = FileConfig::parse("[driver]\ntick_ms = 0")
            .unwrap()
            .tick()
            .unwrap_err();
        assert!(e.contains("driver.tick_ms"), "{e}");
        let e = FileConfig::parse("[driver]\npersist_spin_us = 10001")
            .unwrap()
            .persist_spin()
            .unwrap_err();
        assert!(e.contains("driver.persist_spin_us"), "{e}");
        let e = worker_threads(
            FileConfig::parse("worker_threads = 0")
                .unwrap()
                .worker_threads,
        )
        .unwrap_err();
        assert!(e.contains("worker_threads"), "{e}");
        assert!(worker_threads(Some(WORKER_THREADS_MAX + 1)).is_err());
        assert_eq!(worker_threads(Some(1)), Ok(Some(1)));
        assert_eq!(worker_threads(None), Ok(None));
        let e = FileConfig::parse("[client]\nconnections_max = 0")
            .unwrap()
            .client_limits()
            .unwrap_err();
        assert!(e.contains("client.connections_max"), "{e}");
        let e = FileConfig::parse("[client]\npipeline_max = 0")
            .unwrap()
            .client_limits()
            .unwrap_err();
        assert!(e.contains("client.pipeline_max"), "{e}");
        let e = FileConfig::parse("[storage]\nprobe_interval_ms = 0")
            .unwrap()
            .resume_policy()
            .unwrap_err();
        assert!(e.contains("storage.probe_interval_ms"), "{e}");
        let e = FileConfig::parse("[wal]\nsegment_bytes_max = 1000")
            .unwrap()
            .wal_config(Path::new("/d"))
            .unwrap_err();
        assert!(e.starts_with("wal.segment_bytes_max 1000"), "{e}");
        let e = FileConfig::default().wal_config(Path::new("")).unwrap_err();
        assert_eq!(e, "data_dir must not be empty");
        let e =
            FileConfig::parse("[storage]\nprobe_interval_ms = 500\nprobe_interval_max_ms = 100")
                .unwrap()
                .resume_policy()
                .unwrap_err();
        assert!(e.contains("storage.probe_interval_max_ms"), "{e}");
        let e = parse_peers("2=127.0.0.1:1,x=127.0.0.1:2").unwrap_err();
        assert!(e.contains("peers.x"), "{e}");
        let e = parse_peers("2=127.0.0.1:1,2=127.0.0.1:2").unwrap_err();
        assert!(e.contains("named twice"), "{e}");
        let e = resolve("listen", "no-port").unwrap_err();
        assert!(e.starts_with("listen `no-port`"), "{e}");
        let e = protocol("zab").unwrap_err();
        assert!(e.contains("zab"), "{e}");
        let e = FileConfig::parse("[tls]\nca_file = \"/nonexistent/ca.pem\"")
            .unwrap()
            .tls
            .load()
            .unwrap_err();
        assert!(e.contains("tls.cert_file"), "{e}");
        let full = "[tls]\nca_file = \"/nonexistent/ca.pem\"\ncert_file = \"c\"\n\
                    key_file = \"k\"\nserver_name = \"kv\"";
        let e = FileConfig::parse(full).unwrap().tls.load().unwrap_err();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
        assert_eq!(FileConfig::default().tls.load(), Ok(None));
    }

    #[test]
    fn flags_win_over_the_file_and_a_missing_setting_says_where_to_give_it() {
        assert_eq!(required("id", "KV_ID", Some(1), Some(2)), Ok(1));
        assert_eq!(required("id", "KV_ID", None, Some(2)), Ok(2));
        let e = required::<u64>("client_listen", "KV_CLIENT_LISTEN", None, None).unwrap_err();
        assert!(
            e.contains("--client-listen") && e.contains("KV_CLIENT_LISTEN"),
            "{e}"
        );
    }
}
