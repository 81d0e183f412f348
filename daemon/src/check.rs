//! `lifeboatd check`: the examination of `lifeboat doctor` with the daemon's config and credentials, including the
//! full immutability preflight (a locked canary). Each probe is one line; the command fails if a required one fails.

use lifeboat_config::Config;
pub use lifeboat_core::doctor::Probe;
use lifeboat_core::doctor::{examine, Options};

/// Runs every probe and returns them all (never stops at the first failure).
pub async fn run_checks(config: &Config) -> Vec<Probe> {
    examine(config, Options { canary: true }).await
}
