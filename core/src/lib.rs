//! Lifeboat core.
