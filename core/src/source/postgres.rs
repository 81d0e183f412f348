//! The PostgreSQL logical source: `pg_dumpall --globals-only --no-role-passwords` once, then `pg_dump -Fc -Z0`
//! per database inside an exported snapshot, whose transaction also takes exact per-table row counts.

use super::conn::{db_error, ConnParams};
use super::pgtools::{find_pg_tools, PgTools};
use super::process::ChildStream;
use super::{
    dump_object_name, OpenStream, Source, SourceError, SourcePlan, StreamMeta, StreamSpec,
};
use crate::secret::resolve;
use crate::snapshot::{CatalogDatabase, CatalogTable, ObjectKind, SourceIdentity};
use lifeboat_config::{Databases, PostgresJob};
use std::path::PathBuf;
use tokio::process::Command;

/// Backs up a PostgreSQL server with pg_dump.
pub struct PostgresSource {
    conn: ConnParams,
    databases: Databases,
    pg_bin_dir: Option<PathBuf>,
    search_dirs: Vec<PathBuf>,
    tools: Option<PgTools>,
}

pub(crate) fn db_err(
    context: impl Into<String>,
) -> impl FnOnce(tokio_postgres::Error) -> SourceError {
    let context = context.into();
    move |e| SourceError::Database {
        context,
        message: db_error(&e),
    }
}

/// Quotes an SQL identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl PostgresSource {
    /// Builds the source from a job's config; resolves the password reference.
    pub fn new(
        job_name: &str,
        job: &PostgresJob,
        search_dirs: &[PathBuf],
    ) -> Result<PostgresSource, SourceError> {
        let password = match &job.password {
            Some(r) => Some(resolve(&format!("jobs.{job_name}.password"), r)?),
            None => None,
        };
        let conn = ConnParams::parse(&job.url, password).map_err(SourceError::Config)?;
        Ok(PostgresSource {
            conn,
            databases: job.databases.clone(),
            pg_bin_dir: job.pg_bin_dir.clone(),
            search_dirs: search_dirs.to_vec(),
            tools: None,
        })
    }

    /// Connection parameters (for logging and checks).
    pub fn conn(&self) -> &ConnParams {
        &self.conn
    }

    fn tools(&self) -> Result<&PgTools, SourceError> {
        self.tools
            .as_ref()
            .ok_or_else(|| SourceError::Tools("source not prepared".to_owned()))
    }

    /// A command for one of the chosen client tools, with the connection's environment (password included).
    pub(crate) fn command(&self, tool: &str) -> Result<Command, SourceError> {
        let mut cmd = Command::new(self.tools()?.tool(tool));
        for (k, v) in self.conn.child_env() {
            cmd.env(k, v);
        }
        Ok(cmd)
    }

    async fn open_globals(&self) -> Result<OpenStream, SourceError> {
        let mut cmd = self.command("pg_dumpall")?;
        cmd.arg("--globals-only")
            .arg("--no-role-passwords")
            .arg("--no-password")
            .arg(format!("--dbname={}", self.conn.conninfo()));
        let (child, stdout) = ChildStream::spawn(cmd, "pg_dumpall")?;
        Ok(OpenStream {
            reader: Box::pin(stdout),
            finish: Box::pin(async move {
                child.finish().await?;
                Ok(StreamMeta::default())
            }),
        })
    }

    async fn open_database(&self, database: &str) -> Result<OpenStream, SourceError> {
        let params = self.conn.with_dbname(database);
        let client = params
            .connect()
            .await
            .map_err(|message| SourceError::Database {
                context: format!("connecting to database {database:?}"),
                message,
            })?;
        client
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .await
            .map_err(db_err(format!(
                "starting the dump transaction in {database:?}"
            )))?;
        let snapshot: String = client
            .query_one("SELECT pg_export_snapshot()", &[])
            .await
            .map_err(db_err(format!("exporting a snapshot in {database:?}")))?
            .get(0);

        let mut cmd = self.command("pg_dump")?;
        cmd.arg("--format=custom")
            .arg("--compress=0")
            .arg("--no-password")
            .arg(format!("--snapshot={snapshot}"))
            .arg(format!("--dbname={}", params.conninfo()));
        let (child, stdout) = ChildStream::spawn(cmd, "pg_dump")?;

        // Count rows in the same snapshot while pg_dump streams; the transaction stays open until both finish.
        let db_name = database.to_owned();
        // The exporting transaction must stay open until pg_dump has exited, so COMMIT waits for it.
        let counts = tokio::spawn(async move {
            let tables = count_rows(&client, &db_name).await;
            (tables, client)
        });
        let db_name = database.to_owned();
        Ok(OpenStream {
            reader: Box::pin(stdout),
            finish: Box::pin(async move {
                child.finish().await?;
                let (tables, client) = counts.await.map_err(|e| SourceError::Database {
                    context: format!("counting rows in {db_name:?}"),
                    message: e.to_string(),
                })?;
                let tables = tables?;
                client
                    .batch_execute("COMMIT")
                    .await
                    .map_err(db_err(format!(
                        "ending the dump transaction in {db_name:?}"
                    )))?;
                Ok(StreamMeta {
                    catalog: vec![CatalogDatabase {
                        name: db_name,
                        snapshot,
                        tables,
                    }],
                    volume: None,
                })
            }),
        })
    }
}

/// Exact row counts of every user table of `database`, in the client's current transaction.
pub(crate) async fn count_rows(
    client: &tokio_postgres::Client,
    database: &str,
) -> Result<Vec<CatalogTable>, SourceError> {
    let rows = client
        .query(
            "SELECT n.nspname::text, c.relname::text
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE c.relkind IN ('r', 'm') AND c.relpersistence <> 't' AND c.relispopulated
                AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
                AND NOT EXISTS (SELECT 1 FROM pg_depend d
                                 WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
              ORDER BY 1, 2",
            &[],
        )
        .await
        .map_err(db_err(format!("listing tables of {database:?}")))?;
    let mut tables = Vec::with_capacity(rows.len());
    for row in rows {
        let schema: String = row.get(0);
        let name: String = row.get(1);
        let sql = format!(
            "SELECT count(*) FROM {}.{}",
            quote_ident(&schema),
            quote_ident(&name)
        );
        let count: i64 = client
            .query_one(&sql, &[])
            .await
            .map_err(db_err(format!(
                "counting rows of {schema}.{name} in {database:?}"
            )))?
            .get(0);
        tables.push(CatalogTable {
            schema,
            name,
            rows: count,
        });
    }
    Ok(tables)
}

impl Source for PostgresSource {
    async fn prepare(&mut self) -> Result<SourcePlan, SourceError> {
        let client = self
            .conn
            .connect()
            .await
            .map_err(|message| SourceError::Database {
                context: "connecting to the source server".to_owned(),
                message,
            })?;
        let version_num: String = client
            .query_one("SHOW server_version_num", &[])
            .await
            .map_err(db_err("reading the server version"))?
            .get(0);
        let version: String = client
            .query_one("SHOW server_version", &[])
            .await
            .map_err(db_err("reading the server version"))?
            .get(0);
        let server_major = version_num.parse::<u32>().unwrap_or(0) / 10_000;
        let existing: Vec<String> = client
            .query(
                "SELECT datname::text FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1",
                &[],
            )
            .await
            .map_err(db_err("listing databases"))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let databases = match &self.databases {
            Databases::All => existing.clone(),
            Databases::List(list) => {
                for name in list {
                    if !existing.contains(name) {
                        return Err(SourceError::NoSuchDatabase {
                            name: name.clone(),
                            server: format!("{}:{}", self.conn.host, self.conn.port),
                            existing: existing.join(", "),
                        });
                    }
                }
                list.clone()
            }
        };
        let tools =
            find_pg_tools(server_major, self.pg_bin_dir.as_deref(), &self.search_dirs).await?;
        tracing::debug!(bin_dir = %tools.bin_dir.display(), version = %tools.version, "Using PostgreSQL client tools.");
        let mut streams = vec![StreamSpec {
            name: "globals.sql".to_owned(),
            kind: ObjectKind::GlobalsSql,
            database: None,
        }];
        streams.extend(databases.iter().map(|db| StreamSpec {
            name: dump_object_name(db),
            kind: ObjectKind::PgDumpCustom,
            database: Some(db.clone()),
        }));
        let identity = SourceIdentity {
            kind: "postgres".to_owned(),
            host: self.conn.host.clone(),
            port: self.conn.port,
            user: self.conn.user.clone(),
            databases,
            server_version: version,
            tools: vec![tools.version.clone()],
            path: None,
            superuser: None,
        };
        self.tools = Some(tools);
        Ok(SourcePlan { identity, streams })
    }

    async fn open(&self, spec: &StreamSpec) -> Result<OpenStream, SourceError> {
        match (&spec.kind, &spec.database) {
            (ObjectKind::GlobalsSql, _) => self.open_globals().await,
            (ObjectKind::PgDumpCustom, Some(db)) => self.open_database(db).await,
            _ => Err(SourceError::Config(format!(
                "stream {} is not produced by this source",
                spec.name
            ))),
        }
    }
}
