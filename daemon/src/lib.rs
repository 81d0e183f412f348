//! `lifeboatd`'s library: building jobs from the config, running them, and the `check` command.
//! The binary in `main.rs` only parses arguments, sets up logging and maps errors to exit codes.

pub mod check;
pub mod runner;

/// Exit code for success.
pub const EXIT_OK: i32 = 0;
/// Exit code when an operation (backup, check) failed.
pub const EXIT_FAILED: i32 = 1;
/// Exit code for usage or configuration errors.
pub const EXIT_USAGE: i32 = 2;
