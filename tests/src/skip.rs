//! Skipping tests whose real service or binary is missing, and refusing to skip in CI.
//! A test calls [`require`] (or [`skip_unless!`](crate::skip_unless)) before using Ceph, moto, PostgreSQL, `age`…

/// The environment variable that turns every skip into a failure (`tests/run` and CI set it to `1`).
pub const DISALLOW_SKIP_ENV: &str = "LIFEBOAT_TEST_DISALLOW_SKIP";

const DEFAULT_HOW: &str = "run the tests through tests/run, which installs and starts every real \
     service (PostgreSQL, Ceph RGW, moto) and exports the LIFEBOAT_TEST_* variables";

/// True when `LIFEBOAT_TEST_DISALLOW_SKIP` is `1` (or `true`/`yes`): missing services are then failures.
pub fn skipping_disallowed() -> bool {
    matches!(
        std::env::var(DISALLOW_SKIP_ENV).as_deref().map(str::trim),
        Ok("1" | "true" | "yes")
    )
}

/// Decides whether a test that needs `what` can run.
///
/// Returns `true` when `available`. Otherwise prints `SKIP: <what>` to stderr and returns
/// `false` (the caller returns early and the test passes; see the line with
/// `cargo test -- --nocapture`), unless `LIFEBOAT_TEST_DISALLOW_SKIP=1`, in which case it
/// panics naming what is missing and how to get it.
///
/// ```ignore
/// if !lifeboat_tests::skip::require("the age CLI", skip::binary_on_path("age")) {
///     return;
/// }
/// ```
#[track_caller]
pub fn require(what: &str, available: bool) -> bool {
    require_or(what, DEFAULT_HOW, available)
}

/// Like [`require`], with a specific hint on how to make `what` available (shown when skipping
/// is disallowed), e.g. `"apt-get install -y age"`.
#[track_caller]
pub fn require_or(what: &str, how_to_get: &str, available: bool) -> bool {
    if available {
        return true;
    }
    if skipping_disallowed() {
        panic!(
            "{what} is required but unavailable, and {DISALLOW_SKIP_ENV}=1 forbids skipping. \
             To get it: {how_to_get}. (Unset {DISALLOW_SKIP_ENV} to skip instead.)"
        );
    }
    eprintln!("SKIP: {what}");
    false
}

/// Returns from the current test (with `()` or the given value) when [`require`] says no.
///
/// ```ignore
/// skip_unless!("Ceph RGW tier", lifeboat_tests::s3::ceph().is_some());
/// skip_unless!("age CLI", which("age"), Ok(()));   // in a test returning Result
/// ```
#[macro_export]
macro_rules! skip_unless {
    ($what:expr, $available:expr) => {
        if !$crate::skip::require($what, $available) {
            return;
        }
    };
    ($what:expr, $available:expr, $ret:expr) => {
        if !$crate::skip::require($what, $available) {
            return $ret;
        }
    };
}

/// True when `name` is an executable file in one of the `PATH` directories (or is such a path).
pub fn binary_on_path(name: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let is_exec = |p: &std::path::Path| {
        p.metadata()
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if name.contains('/') {
        return is_exec(std::path::Path::new(name));
    }
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| is_exec(&dir.join(name))))
        .unwrap_or(false)
}
