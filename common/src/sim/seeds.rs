//! Running a simulation over many seeds: [`run_seeds`] and the environment variables
//! (`SIM_SEEDS`, `SIM_SEED`) that choose them.

use super::SimError;

/// What [`run_seeds`] ran.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeedReport {
    /// How many seeds ran.
    pub seeds: u64,
    /// The first seed.
    pub first: u64,
}

/// Runs `run` for the seeds chosen by the environment, stopping at the first failure.
///
/// - `SIM_SEED=s` runs only seed `s` (replaying a failure);
/// - otherwise `SIM_SEEDS=n` runs seeds `0..n`, and without it `0..default_count`.
pub fn run_seeds<F>(default_count: u64, mut run: F) -> Result<SeedReport, SimError>
where
    F: FnMut(u64) -> Result<(), SimError>,
{
    let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    let (first, count) = match env("SIM_SEED") {
        Some(seed) => (seed, 1),
        None => (0, env("SIM_SEEDS").unwrap_or(default_count)),
    };
    for seed in first..first.saturating_add(count) {
        run(seed)?;
    }
    Ok(SeedReport {
        seeds: count,
        first,
    })
}
