//! Running a simulation over many seeds: [`run_seeds`] and the environment variables
//! (`SIM_SEEDS`, `SIM_SEED_FIRST`, `SIM_SEED`) that choose them.

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
/// - otherwise `SIM_SEEDS=n` runs `n` seeds, and without it `default_count`, from seed
///   `SIM_SEED_FIRST` (0 without it): a long sweep can go on where the last one ended.
pub fn run_seeds<F>(default_count: u64, run: F) -> Result<SeedReport, SimError>
where
    F: FnMut(u64) -> Result<(), SimError>,
{
    let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    let (first, count) = seed_range(
        env("SIM_SEED"),
        env("SIM_SEEDS"),
        env("SIM_SEED_FIRST"),
        default_count,
    );
    run_seed_range(first, count, run)
}

/// Runs `run` for the `count` seeds from `first`, stopping at the first failure: what
/// [`run_seeds`] does once the environment has chosen, for a caller that chooses itself.
pub fn run_seed_range<F>(first: u64, count: u64, mut run: F) -> Result<SeedReport, SimError>
where
    F: FnMut(u64) -> Result<(), SimError>,
{
    for seed in first..first.saturating_add(count) {
        run(seed)?;
    }
    Ok(SeedReport {
        seeds: count,
        first,
    })
}

/// The first seed and how many, from the variables' values (see [`run_seeds`]).
fn seed_range(
    seed: Option<u64>,
    seeds: Option<u64>,
    seed_first: Option<u64>,
    default_count: u64,
) -> (u64, u64) {
    match seed {
        Some(seed) => (seed, 1),
        None => (seed_first.unwrap_or(0), seeds.unwrap_or(default_count)),
    }
}

#[cfg(test)]
mod tests {
    use super::seed_range;

    #[test]
    fn the_variables_choose_the_seeds() {
        assert_eq!(seed_range(None, None, None, 500), (0, 500));
        assert_eq!(seed_range(None, Some(30_000), None, 500), (0, 30_000));
        assert_eq!(
            seed_range(None, Some(70_000), Some(30_000), 500),
            (30_000, 70_000),
            "a sweep that goes on from an earlier one"
        );
        assert_eq!(seed_range(None, None, Some(9), 500), (9, 500));
        assert_eq!(
            seed_range(Some(12_629), Some(30_000), Some(7), 500),
            (12_629, 1),
            "a replay runs its seed alone"
        );
    }
}
