//! `AnySource`: the closed set of source kinds, built from a job's config, dispatching to the one it holds.
//! An enum rather than a trait object, so `Source` can keep its `impl Future` methods (as `AnyStore` does).

use lifeboat_config::SourceConfig;
use std::path::PathBuf;

use super::{
    OpenStream, PhysicalSource, PostgresSource, Source, SourceError, SourcePlan, StreamSpec,
    VolumeSource,
};

/// A source of any implemented kind.
pub enum AnySource {
    /// `kind = "postgres"`.
    Postgres(PostgresSource),
    /// `kind = "volume"`.
    Volume(VolumeSource),
    /// `kind = "postgres_physical"`.
    Physical(PhysicalSource),
}

impl AnySource {
    /// Builds job `name`'s source from its config; `pg_bin_dirs` are searched for PostgreSQL tools before `PATH`.
    pub fn from_config(
        name: &str,
        cfg: &SourceConfig,
        pg_bin_dirs: &[PathBuf],
    ) -> Result<AnySource, String> {
        Ok(match cfg {
            SourceConfig::Postgres(pg) => AnySource::Postgres(
                PostgresSource::new(name, pg, pg_bin_dirs)
                    .map_err(|e| format!("jobs.{name}: {e}"))?,
            ),
            SourceConfig::Volume(v) => AnySource::Volume(VolumeSource::new(name, v)),
            SourceConfig::PostgresPhysical(pg) => AnySource::Physical(
                PhysicalSource::new(name, pg, pg_bin_dirs)
                    .map_err(|e| format!("jobs.{name}: {e}"))?,
            ),
        })
    }
}

impl Source for AnySource {
    async fn prepare(&mut self) -> Result<SourcePlan, SourceError> {
        match self {
            AnySource::Postgres(s) => s.prepare().await,
            AnySource::Volume(s) => s.prepare().await,
            AnySource::Physical(s) => s.prepare().await,
        }
    }

    async fn open(&self, spec: &StreamSpec) -> Result<OpenStream, SourceError> {
        match self {
            AnySource::Postgres(s) => s.open(spec).await,
            AnySource::Volume(s) => s.open(spec).await,
            AnySource::Physical(s) => s.open(spec).await,
        }
    }
}
