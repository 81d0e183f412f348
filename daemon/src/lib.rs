//! Lifeboat daemon.
