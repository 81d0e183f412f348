//! Lifeboat configuration.
