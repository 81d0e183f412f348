//! Lifeboat's test harness: throw-away PostgreSQL clusters, fixtures and fingerprints, the real S3 tiers
//! (Ceph RGW, moto), helpers to run the built binaries, and directory-tree comparison for volume backups.
//! Failing loudly is its job, hence the allows.
#![allow(clippy::expect_used, clippy::unwrap_used)]
pub mod compare;
pub mod daemon;
pub mod fixture;
pub mod lifeboat;
pub mod postgres;
pub mod rgw;
pub mod s3;
pub mod skip;
pub mod tree;
pub mod yaml;
