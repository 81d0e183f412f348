//! `AnySource`: the closed set of source kinds, built from a job's config, dispatching to the one it holds.
//! An enum rather than a trait object, so `Source` can keep its `impl Future` methods (as `AnyStore` does).

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
