//! The `postgres_physical` source: `pg_basebackup --format=tar --pgdata=- --wal-method=fetch` of the whole cluster
//! as one tar stream (`cluster.tar`, WAL and `backup_manifest` with SHA-256 checksums inside), no temporary file.

use super::postgres::{count_rows, db_err};
use super::{
    ChildStream, OpenStream, PostgresSource, Source, SourceError, SourcePlan, StreamMeta,
    StreamSpec,
};
use crate::snapshot::{CatalogDatabase, ObjectKind};
use lifeboat_config::PostgresJob;
use std::path::PathBuf;

/// Name of the one object a physical snapshot holds.
pub const CLUSTER_OBJECT: &str = "cluster.tar";

/// A whole PostgreSQL cluster, copied with `pg_basebackup`.
pub struct PhysicalSource {
    inner: PostgresSource,
    databases: Vec<String>,
    fast_checkpoint: bool,
}

impl PhysicalSource {
    /// Builds the source from a job's config; resolves the password reference.
    pub fn new(
        job_name: &str,
        job: &PostgresJob,
        search_dirs: &[PathBuf],
    ) -> Result<PhysicalSource, SourceError> {
        Ok(PhysicalSource {
            inner: PostgresSource::new(job_name, job, search_dirs)?,
            databases: Vec::new(),
            fast_checkpoint: job.fast_checkpoint,
        })
    }
}

impl Source for PhysicalSource {
    async fn prepare(&mut self) -> Result<SourcePlan, SourceError> {
        // Connection, server version, databases and client tools as for logical dumps.
        let plan = self.inner.prepare().await?;
        let conn = self.inner.conn().clone();
        let client = conn
            .connect()
            .await
            .map_err(|message| SourceError::Database {
                context: "connecting to the source server".to_owned(),
                message,
            })?;
        let can_replicate: bool = client
            .query_one(
                "SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user",
                &[],
            )
            .await
            .map_err(db_err("checking the REPLICATION attribute"))?
            .get(0);
        if !can_replicate {
            return Err(SourceError::Config(format!(
                "role {:?} may not take base backups; grant it with ALTER ROLE \"{}\" REPLICATION (and allow it a \
                 replication connection in pg_hba.conf)",
                conn.user, conn.user
            )));
        }
        let tablespaces: Vec<String> = client
            .query(
                "SELECT spcname::text FROM pg_tablespace WHERE spcname NOT IN ('pg_default', 'pg_global') ORDER BY 1",
                &[],
            )
            .await
            .map_err(db_err("listing tablespaces"))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if !tablespaces.is_empty() {
            return Err(SourceError::Config(format!(
                "the cluster has tablespaces outside its data directory ({}); pg_basebackup can stream only a \
                 single-tablespace cluster as one tar; back those databases up with kind = \"postgres\" instead",
                tablespaces.join(", ")
            )));
        }
        let superuser: String = client
            .query_one("SELECT rolname::text FROM pg_roles WHERE oid = 10", &[])
            .await
            .map_err(db_err("reading the bootstrap superuser's name"))?
            .get(0);
        self.databases = plan.identity.databases.clone();
        let mut identity = plan.identity;
        identity.kind = "postgres_physical".to_owned();
        identity.superuser = Some(superuser);
        identity.tools = identity
            .tools
            .iter()
            .map(|t| t.replace("pg_dump", "pg_basebackup"))
            .collect();
        Ok(SourcePlan {
            identity,
            streams: vec![StreamSpec {
                name: CLUSTER_OBJECT.to_owned(),
                kind: ObjectKind::Tar,
                database: None,
            }],
        })
    }

    async fn open(&self, spec: &StreamSpec) -> Result<OpenStream, SourceError> {
        if spec.kind != ObjectKind::Tar {
            return Err(SourceError::Config(format!(
                "a physical source has no stream {:?}",
                spec.name
            )));
        }
        // Tables and exact row counts at backup start: evidence for drills (a busy cluster changes them before
        // the backup's end, which is the state a restore reaches).
        let mut catalog = Vec::with_capacity(self.databases.len());
        for db in &self.databases {
            let client = self
                .inner
                .conn()
                .with_dbname(db)
                .connect()
                .await
                .map_err(|message| SourceError::Database {
                    context: format!("connecting to {db:?} to list its tables"),
                    message,
                })?;
            client
                .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .await
                .map_err(db_err(format!(
                    "starting a read-only transaction in {db:?}"
                )))?;
            let tables = count_rows(&client, db).await?;
            client
                .batch_execute("COMMIT")
                .await
                .map_err(db_err(format!("ending the transaction in {db:?}")))?;
            catalog.push(CatalogDatabase {
                name: db.clone(),
                snapshot: String::new(),
                tables,
            });
        }
        let mut cmd = self.inner.command("pg_basebackup")?;
        cmd.arg("--no-password")
            .arg(format!("--dbname={}", self.inner.conn().conninfo()))
            .arg("--format=tar")
            .arg("--pgdata=-")
            .arg("--wal-method=fetch")
            .arg("--manifest-checksums=SHA256")
            .arg("--label=lifeboat")
            .arg(if self.fast_checkpoint {
                "--checkpoint=fast"
            } else {
                "--checkpoint=spread"
            });
        let (child, stdout) = ChildStream::spawn(cmd, "pg_basebackup")?;
        let finish = Box::pin(async move {
            child.finish().await?;
            Ok(StreamMeta {
                catalog,
                volume: None,
            })
        });
        Ok(OpenStream {
            reader: Box::pin(stdout),
            finish,
        })
    }
}
