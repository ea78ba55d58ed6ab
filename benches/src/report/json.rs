//! The shootout's figures as pretty-printed JSON: the steady-state rows alone ([`render_json`])
//! or the whole [`Report`] with its machine ([`Report::json`]).

use super::Report;
use crate::{BenchError, Row};

/// Renders `rows` as pretty-printed JSON (an array of objects with every [`Row`] field).
pub fn render_json(rows: &[Row]) -> Result<String, BenchError> {
    serde_json::to_string_pretty(rows).map_err(|e| BenchError::Invalid(format!("json: {e}")))
}

impl Report {
    /// Renders every figure as pretty-printed JSON.
    pub fn json(&self) -> Result<String, BenchError> {
        serde_json::to_string_pretty(self).map_err(|e| BenchError::Invalid(format!("json: {e}")))
    }
}
