//! What the criterion suites share, included by each with `mod support;`: the quick-pass
//! setting. It lives beside the suites so that criterion stays a development dependency of
//! the crate.

/// Environment variable that asks every criterion suite for a quick pass by hand
/// (`BENCH_FAST=1 cargo bench -p benches`): short warm-up and measurement, few samples.
pub const BENCH_FAST_ENV: &str = "BENCH_FAST";

/// Shortens a criterion group's warm-up, measurement and sample count when [`BENCH_FAST_ENV`] is
/// set; otherwise leaves the group's own settings alone. Call it after the group is configured.
pub fn fast_mode<M: criterion::measurement::Measurement>(
    group: &mut criterion::BenchmarkGroup<'_, M>,
) {
    if std::env::var_os(BENCH_FAST_ENV).is_some() {
        group
            .warm_up_time(std::time::Duration::from_millis(200))
            .measurement_time(std::time::Duration::from_millis(800))
            .sample_size(10);
    }
}
