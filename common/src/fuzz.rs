//! What the workspace's fuzz targets share (feature `fuzz`): how long a run lasts, and a
//! target over random byte strings of a chosen length. The targets live in each crate's
//! `tests/fuzz_*.rs` and run under `cargo test` with [`bolero`].

use std::time::Duration;

pub use bolero;

/// Environment variable that turns every target's short run into a run of this many seconds.
pub const FUZZ_SECS_ENV: &str = "FUZZ_SECS";

/// The length of a long run, if [`FUZZ_SECS_ENV`] asks for one.
pub fn fuzz_secs() -> Option<Duration> {
    std::env::var(FUZZ_SECS_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs)
}

/// Runs `$test` (a closure over `&Vec<u8>`) on random byte strings of up to `$max_len` bytes:
/// `$iterations` of them, or for [`fuzz_secs`] when set. bolero's default byte generator stops
/// at 64 bytes, too short for most messages. Call it from a `#[test]` function (bolero names
/// the target after it).
#[macro_export]
macro_rules! fuzz_bytes {
    ($max_len:expr, $iterations:expr, $test:expr) => {{
        let target = $crate::fuzz::bolero::check!()
            .with_generator(
                $crate::fuzz::bolero::produce::<Vec<u8>>()
                    .with()
                    .len(0..=$max_len),
            )
            .with_max_len($max_len);
        let target = match $crate::fuzz::fuzz_secs() {
            Some(secs) => target.with_test_time(secs),
            None => target.with_iterations($iterations),
        };
        target.for_each($test);
    }};
}
