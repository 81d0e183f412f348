//! End-to-end tests: the real `lifeboatd` and `lifeboat` binaries against real PostgreSQL clusters,
//! the fs store, and real S3 servers with Object Lock (Ceph RGW, moto) started by `tests/run`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod backup_restore;
mod break_glass;
mod cancel;
mod common;
mod config_errors;
mod copy;
mod daemon;
mod deploy_manifests;
mod docker_image;
mod doctor;
mod failures;
mod fan_out;
mod large;
mod observability;
mod pgpass;
mod physical;
mod prune;
mod signing;
mod store_audit;
mod store_init;
mod store_suite;
mod systemd_unit;
mod tls;
mod verify_drill;
mod volume;
