//! Lifeboat's shared library: the snapshot format, sources, the encode/decode pipeline and the stores.
//! Both binaries (`lifeboatd`, `lifeboat`) link it; it never parses arguments, exports metrics or builds a runtime.

pub mod backup;
pub mod copy;
pub mod doctor;
pub mod drill;
pub mod extract;
pub mod independence;
pub mod inventory;
pub mod pipeline;
pub mod prune;
pub mod recipients;
pub mod restore;
pub mod retention;
pub mod scratch;
pub mod secret;
pub mod snapshot;
pub mod source;
pub mod store;
pub mod verification;
pub mod verify;

/// The version of Lifeboat that wrote a snapshot, recorded in every manifest.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
