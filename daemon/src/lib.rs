//! `lifeboatd`'s library: the service (scheduler, metrics, HTTP endpoint), running jobs, and `check`.
//! The binary in `main.rs` only parses arguments, sets up logging and maps errors to exit codes.

pub mod audit;
pub mod check;
pub mod health;
pub mod hooks;
pub mod http;
pub mod metrics;
pub mod notify;
pub mod observe;
pub mod planner;
pub mod runner;
pub mod service;
pub mod worker;

/// Exit code for success.
pub const EXIT_OK: i32 = 0;
/// Exit code when an operation (backup, check) failed.
pub const EXIT_FAILED: i32 = 1;
/// Exit code for usage or configuration errors.
pub const EXIT_USAGE: i32 = 2;
