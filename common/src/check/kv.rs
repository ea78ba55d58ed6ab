//! Linearizability of key-value histories, checked per key with `porcupine-rs`.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use porcupine_rs::{CheckResult, Model};
use serde::{Deserialize, Serialize};

use super::history::{History, HistoryError, Operation};

/// A key-value request.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "snake_case")]
pub enum KvInput {
    /// Read a key.
    Get {
        /// The key.
        key: String,
    },
    /// Write a key.
    Put {
        /// The key.
        key: String,
        /// The new value.
        value: String,
    },
    /// Remove a key.
    Delete {
        /// The key.
        key: String,
    },
    /// Compare-and-set: write `new` if the key currently holds `expected` (`None`: absent).
    Cas {
        /// The key.
        key: String,
        /// The value the key must hold.
        expected: Option<String>,
        /// The value written if it does.
        new: String,
    },
}

impl KvInput {
    /// The key the request touches.
    pub fn key(&self) -> &str {
        match self {
            KvInput::Get { key }
            | KvInput::Put { key, .. }
            | KvInput::Delete { key }
            | KvInput::Cas { key, .. } => key,
        }
    }
}

/// A key-value answer.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "snake_case")]
pub enum KvOutput {
    /// The value a `Get` read (`None`: absent).
    Value {
        /// The value.
        value: Option<String>,
    },
    /// A `Put` or `Delete` took effect.
    Done,
    /// Whether a `Cas` wrote its value.
    Cas {
        /// `true` if the key held the expected value and now holds the new one.
        swapped: bool,
    },
}

/// A single key's register, the sequential specification the checker holds histories against.
#[derive(Clone, Debug)]
pub struct KvModel;

/// One operation on one key, as the model sees it (the key is implied by the partition).
#[derive(Clone, Debug)]
pub struct KvStep {
    /// The request.
    pub input: KvInput,
    /// The answer, or `None` when unknown (then any answer the model allows is accepted).
    pub output: Option<KvOutput>,
}

impl Model for KvModel {
    type State = Option<String>;
    type Op = KvStep;
    type Metadata = u64;

    fn init() -> Self::State {
        None
    }

    fn step(state: &Self::State, op: &Self::Op) -> (bool, Self::State) {
        match (&op.input, &op.output) {
            (KvInput::Get { .. }, None) => (true, state.clone()),
            (KvInput::Get { .. }, Some(KvOutput::Value { value })) => {
                (value == state, state.clone())
            }
            (KvInput::Put { value, .. }, None | Some(KvOutput::Done)) => {
                (true, Some(value.clone()))
            }
            (KvInput::Delete { .. }, None | Some(KvOutput::Done)) => (true, None),
            (KvInput::Cas { expected, new, .. }, output) => {
                let matches = expected == state;
                match output {
                    // Unknown outcome: the model decides from the state, the search decides
                    // where (or whether, by placing it last) it takes effect.
                    None if matches => (true, Some(new.clone())),
                    None => (true, state.clone()),
                    Some(KvOutput::Cas { swapped: true }) if matches => (true, Some(new.clone())),
                    Some(KvOutput::Cas { swapped: false }) if !matches => (true, state.clone()),
                    _ => (false, state.clone()),
                }
            }
            // An answer of the wrong kind never fits.
            _ => (false, state.clone()),
        }
    }
}

/// Options of [`check_kv_with`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckOptions {
    /// Give up on a key after this much wall-clock time and report
    /// [`Verdict::Unknown`] (the search is exponential in the worst case). `None`: no limit.
    /// A limit makes the verdict depend on the machine's speed.
    pub timeout_per_key: Option<Duration>,
}

/// The sub-history of the key on which a history is not linearizable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvViolation {
    /// The key.
    pub key: String,
    /// Every operation on the key, by invocation time.
    pub operations: Vec<Operation<KvInput, KvOutput>>,
    /// The ids of the longest prefix of operations the checker could linearize, in order:
    /// the operation that follows it in real time is where the history breaks.
    pub longest_prefix: Vec<u64>,
}

impl fmt::Display for KvViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "key {:?} is not linearizable; its operations:", self.key)?;
        for op in &self.operations {
            let ret = op
                .ret
                .map(|t| t.to_string())
                .unwrap_or_else(|| "∞".to_string());
            let out = op
                .output
                .as_ref()
                .map(|o| format!("{o:?}"))
                .unwrap_or_else(|| "unknown".to_string());
            writeln!(
                f,
                "  op {} client {} [{}, {}] {:?} -> {}",
                op.id, op.client, op.call, ret, op.input, out
            )?;
        }
        write!(
            f,
            "  longest linearizable prefix: {:?}",
            self.longest_prefix
        )
    }
}

/// The checker's verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every key's sub-history is linearizable.
    Linearizable,
    /// This key's sub-history is not (the first such key, in key order).
    NotLinearizable(KvViolation),
    /// The search on this key hit [`CheckOptions::timeout_per_key`].
    Unknown {
        /// The key.
        key: String,
    },
}

impl Verdict {
    /// Whether the history is linearizable.
    pub fn is_linearizable(&self) -> bool {
        matches!(self, Verdict::Linearizable)
    }
}

/// Checks a key-value history for linearizability, without a time limit.
pub fn check_kv(history: &History<KvInput, KvOutput>) -> Result<Verdict, HistoryError> {
    check_kv_with(history, &CheckOptions::default())
}

/// Checks a key-value history for linearizability: pairs events into operations
/// ([`History::operations`]), splits them by key, and runs porcupine's search on each key in
/// turn on the calling thread. Operations whose outcome is unknown are open-ended: they may take
/// effect at any point after their invocation, or never.
pub fn check_kv_with(
    history: &History<KvInput, KvOutput>,
    options: &CheckOptions,
) -> Result<Verdict, HistoryError> {
    let ops = history.operations()?;
    let mut by_key: BTreeMap<String, Vec<Operation<KvInput, KvOutput>>> = BTreeMap::new();
    for op in ops {
        by_key
            .entry(op.input.key().to_string())
            .or_default()
            .push(op);
    }
    for (key, mut ops) in by_key {
        ops.sort_by_key(|op| (op.call, op.id));
        let model_ops = to_model(&ops);
        let result = match options.timeout_per_key {
            None => {
                if porcupine_rs::check_operations::<KvModel>(&model_ops) {
                    CheckResult::Ok
                } else {
                    CheckResult::Illegal
                }
            }
            Some(t) => porcupine_rs::check_operations_timeout::<KvModel>(&model_ops, t),
        };
        match result {
            CheckResult::Ok => {}
            CheckResult::Unknown => return Ok(Verdict::Unknown { key }),
            CheckResult::Illegal => {
                let longest_prefix = longest_prefix(&model_ops, &ops);
                return Ok(Verdict::NotLinearizable(KvViolation {
                    key,
                    operations: ops,
                    longest_prefix,
                }));
            }
        }
    }
    Ok(Verdict::Linearizable)
}

/// Converts timestamps: porcupine orders `i64` times, calls before returns at equal times, so
/// operations that touch at one instant count as concurrent. An unknown outcome returns at
/// `i64::MAX`, after everything else: the search may place it anywhere after its call, and
/// placing it last is the same as it never taking effect.
fn to_model(ops: &[Operation<KvInput, KvOutput>]) -> Vec<porcupine_rs::Operation<KvModel>> {
    let t = |v: u64| i64::try_from(v).unwrap_or(i64::MAX - 1).min(i64::MAX - 1);
    ops.iter()
        .map(|op| porcupine_rs::Operation {
            client_id: u32::try_from(op.client).ok(),
            call_time: t(op.call),
            return_time: op.ret.map(t).unwrap_or(i64::MAX),
            op: KvStep {
                input: op.input.clone(),
                output: op.output.clone(),
            },
            metadata: Some(op.id),
        })
        .collect()
}

fn longest_prefix(
    model_ops: &[porcupine_rs::Operation<KvModel>],
    ops: &[Operation<KvInput, KvOutput>],
) -> Vec<u64> {
    let (_, info) = porcupine_rs::check_operations_info::<KvModel>(model_ops);
    info.partial_linearizations
        .into_iter()
        .flatten()
        .max_by_key(|seq| seq.len())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|i| ops.get(i).map(|op| op.id))
        .collect()
}
