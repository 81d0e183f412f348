//! Snapshot ids: `YYYYMMDDTHHMMSSZ-xxxxxx`, sortable by time, with 6 random base32 characters.
//! Parsing is strict so that an id can be used safely as an object-key segment.

use chrono::{DateTime, NaiveDateTime, Utc};
use rand::RngExt;
use std::fmt;
use std::str::FromStr;

const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
const TIME_FORMAT: &str = "%Y%m%dT%H%M%SZ";

/// A snapshot id, e.g. `20261126T011530Z-k3v9qa`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SnapshotId(String);

/// Why a string is not a snapshot id.
#[derive(Debug, thiserror::Error)]
#[error(
    "invalid snapshot id {0:?}: expected YYYYMMDDTHHMMSSZ-xxxxxx (e.g. 20261126T011530Z-k3v9qa)"
)]
pub struct SnapshotIdError(String);

impl SnapshotId {
    /// A new id for a snapshot started at `at`.
    pub fn new(at: DateTime<Utc>) -> Self {
        let mut rng = rand::rng();
        let suffix: String = (0..6)
            .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
            .collect();
        SnapshotId(format!("{}-{suffix}", at.format(TIME_FORMAT)))
    }

    /// The time encoded in the id (second precision).
    pub fn time(&self) -> Option<DateTime<Utc>> {
        let stamp = self.0.get(..16)?;
        NaiveDateTime::parse_from_str(stamp, TIME_FORMAT)
            .ok()
            .map(|t| t.and_utc())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for SnapshotId {
    type Err = SnapshotIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = s.as_bytes();
        let ok = bytes.len() == 23
            && bytes[16] == b'-'
            && bytes[17..].iter().all(|b| ALPHABET.contains(b))
            && NaiveDateTime::parse_from_str(&s[..16], TIME_FORMAT).is_ok();
        if ok {
            Ok(SnapshotId(s.to_owned()))
        } else {
            Err(SnapshotIdError(s.to_owned()))
        }
    }
}

impl fmt::Display for SnapshotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl serde::Serialize for SnapshotId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for SnapshotId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn new_ids_parse_back_and_sort_by_time() {
        let a = SnapshotId::new(Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap());
        let b = SnapshotId::new(Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 6).unwrap());
        assert!(a.as_str().starts_with("20260102T030405Z-"));
        assert_eq!(a.as_str().parse::<SnapshotId>().unwrap(), a);
        assert!(a < b);
        assert_eq!(
            a.time().unwrap(),
            Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap()
        );
    }

    #[test]
    fn rejects_malformed_ids() {
        for bad in [
            "",
            "20260102T030405Z",
            "20260102T030405Z-ABCDEF",
            "20261302T030405Z-abcdef",
            "20260102T030405Z-abc/ef",
            "../../../etc/passwd00-a",
        ] {
            assert!(bad.parse::<SnapshotId>().is_err(), "{bad}");
        }
    }
}
