//! Restore drills: restore a snapshot into a throw-away PostgreSQL and prove the data is there — every catalog
//! table exists with the exact row count taken at dump time, and the job's own SQL checks hold.

use crate::restore::{dump_major, read_catalog, restore_to_database, DatabaseTarget, Identities};
use crate::scratch::{ScratchCluster, ScratchOptions};
use crate::snapshot::{Catalog, Manifest, ObjectKind};
use crate::source::{quote_ident, ConnParams};
use crate::store::ReadStore;
use crate::verification::CheckResult;
use rand::RngExt;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

/// Where a drill restores.
pub enum DrillTarget {
    /// A fresh local cluster (`initdb` in a temp dir), removed afterwards.
    Local(ScratchOptions),
    /// An existing scratch server: fresh databases with unique names, dropped afterwards. `conn` names its
    /// maintenance database.
    Server(ConnParams),
}

/// What to drill besides the built-in checks.
pub struct DrillPlan {
    /// Where to restore.
    pub target: DrillTarget,
    /// The job's SQL checks (each returns one boolean).
    pub checks: Vec<String>,
    /// The (original) database the checks run in.
    pub checks_database: Option<String>,
    /// Extra directories to search for client tools.
    pub search_dirs: Vec<PathBuf>,
}

/// The outcome of a drill.
pub struct DrillOutcome {
    /// Every check, in order.
    pub checks: Vec<CheckResult>,
    /// Wall time of restoring every database (globals included): the measured RTO.
    pub restore_seconds: Option<f64>,
}

fn check(name: impl Into<String>, passed: bool, detail: impl Into<String>) -> CheckResult {
    CheckResult {
        name: name.into(),
        passed,
        detail: detail.into(),
    }
}

/// Where each restored database lives.
struct Restored {
    /// Connection to the restore server's maintenance database (for dropping scratch databases).
    admin: ConnParams,
    /// Original database name → connection to its restored copy.
    databases: BTreeMap<String, ConnParams>,
}

/// Runs a drill of one snapshot. Never stops at the first failed check unless nothing further can be checked.
pub async fn drill<S: ReadStore>(
    store: &S,
    manifest: &Manifest,
    identities: Identities,
    plan: &DrillPlan,
) -> DrillOutcome {
    let mut checks = Vec::new();
    if manifest.source.kind == "postgres_physical" {
        return drill_physical(store, manifest, identities, plan).await;
    }
    let catalog = match read_catalog(store, manifest, identities.clone()).await {
        Ok(c) => {
            let tables: usize = c.databases.iter().map(|d| d.tables.len()).sum();
            checks.push(check(
                "catalog",
                true,
                format!(
                    "{} databases, {tables} tables with row counts",
                    c.databases.len()
                ),
            ));
            c
        }
        Err(e) => {
            checks.push(check(
                "catalog",
                false,
                format!("cannot read the snapshot's catalog: {e}"),
            ));
            return DrillOutcome {
                checks,
                restore_seconds: None,
            };
        }
    };

    // The target: a local cluster (kept alive until the end of the drill) or a scratch server.
    let mut cluster = None;
    let (admin, local, tools_dir) = match &plan.target {
        DrillTarget::Local(opts) => {
            let mut opts = opts.clone();
            opts.min_major = opts.min_major.max(dump_major(manifest));
            match ScratchCluster::start(&opts).await {
                Ok(c) => {
                    checks.push(check(
                        "scratch cluster",
                        true,
                        format!(
                            "PostgreSQL {} started in {}",
                            c.major(),
                            c.socket_dir().display()
                        ),
                    ));
                    let admin = c.conn("postgres");
                    let dir = c.bin_dir().to_path_buf();
                    cluster = Some(c);
                    (admin, true, Some(dir))
                }
                Err(e) => {
                    checks.push(check("scratch cluster", false, e.to_string()));
                    return DrillOutcome {
                        checks,
                        restore_seconds: None,
                    };
                }
            }
        }
        DrillTarget::Server(conn) => (conn.clone(), false, None),
    };

    let started = Instant::now();
    let restored = restore_all(
        store,
        manifest,
        identities,
        plan,
        &admin,
        local,
        tools_dir,
        &mut checks,
    )
    .await;
    let restore_seconds = Some(started.elapsed().as_secs_f64());

    if restored.databases.len() == manifest_dumps(manifest) && manifest_dumps(manifest) > 0 {
        row_counts(&catalog, &restored, &mut checks).await;
        sql_checks(plan, &restored, &mut checks).await;
    } else if manifest_dumps(manifest) == 0 {
        checks.push(check(
            "restore",
            false,
            "the snapshot holds no database dump",
        ));
    }

    if !local {
        drop_scratch_databases(&restored, &mut checks).await;
    }
    if let Some(c) = cluster {
        if let Err(e) = c.stop().await {
            checks.push(check("scratch cluster stopped", false, e.to_string()));
        }
    }
    DrillOutcome {
        checks,
        restore_seconds,
    }
}

/// A physical snapshot: the base backup restored into a local cluster's data directory, started (recovery
/// included), then its tables and the job's SQL checks. Row counts were taken at backup start, while the
/// restore reaches the backup's end, so they are compared for information: every table must exist.
async fn drill_physical<S: ReadStore>(
    store: &S,
    manifest: &Manifest,
    identities: Identities,
    plan: &DrillPlan,
) -> DrillOutcome {
    let mut checks = Vec::new();
    let fail = |mut checks: Vec<CheckResult>, name: &str, detail: String| {
        checks.push(check(name, false, detail));
        DrillOutcome {
            checks,
            restore_seconds: None,
        }
    };
    let DrillTarget::Local(opts) = &plan.target else {
        return fail(
            checks,
            "scratch cluster",
            "a physical backup restores a whole cluster, which needs a local throw-away cluster: remove [drill] \
             scratch_url to drill this job"
                .into(),
        );
    };
    let catalog = match read_catalog(store, manifest, identities.clone()).await {
        Ok(c) => c,
        Err(e) => {
            return fail(
                checks,
                "catalog",
                format!("cannot read the snapshot's catalog: {e}"),
            )
        }
    };
    let Some(entry) = manifest.objects.iter().find(|o| o.kind == ObjectKind::Tar) else {
        return fail(
            checks,
            "restore",
            "the snapshot holds no cluster archive".into(),
        );
    };
    let mut opts = opts.clone();
    let server_major = manifest
        .source
        .server_version
        .split('.')
        .next()
        .and_then(|m| m.parse::<u32>().ok())
        .unwrap_or(0);
    // A data directory only starts with the same major version.
    opts.min_major = opts.min_major.max(server_major);
    let cluster = match ScratchCluster::prepare(&opts).await {
        Ok(c) if c.major() == server_major || server_major == 0 => c,
        Ok(c) => {
            return fail(
                checks,
                "scratch cluster",
                format!(
                    "the backup is of PostgreSQL {server_major}, the server found is {}; install PostgreSQL \
                     {server_major} server binaries or set [drill] pg_bin_dir",
                    c.major()
                ),
            )
        }
        Err(e) => return fail(checks, "scratch cluster", e.to_string()),
    };
    let started = Instant::now();
    match crate::restore::restore_to_dir(
        store,
        manifest,
        entry,
        identities,
        &cluster.data_dir(),
        false,
        None,
    )
    .await
    {
        Ok(report) if report.mismatches.is_empty() => checks.push(check(
            "restore cluster",
            true,
            format!(
                "{} files extracted; every file matches pg_basebackup's backup_manifest",
                report.extract.files
            ),
        )),
        Ok(report) => {
            return fail(checks, "restore cluster", report.mismatches.join("; "));
        }
        Err(e) => return fail(checks, "restore cluster", e.to_string()),
    }
    if let Err(e) = cluster.start_restored().await {
        return fail(checks, "cluster starts", e.to_string());
    }
    let restore_seconds = Some(started.elapsed().as_secs_f64());
    checks.push(check(
        "cluster starts",
        true,
        format!(
            "PostgreSQL {} recovered the backup and accepts connections",
            cluster.major()
        ),
    ));
    let superuser = manifest
        .source
        .superuser
        .clone()
        .unwrap_or_else(|| "postgres".into());
    let mut restored = Restored {
        admin: cluster.conn("postgres"),
        databases: BTreeMap::new(),
    };
    for db in &catalog.databases {
        let mut conn = cluster.conn(&db.name);
        conn.user = superuser.clone();
        restored.databases.insert(db.name.clone(), conn);
    }
    tables_present(&catalog, &restored, &mut checks).await;
    sql_checks(plan, &restored, &mut checks).await;
    if let Err(e) = cluster.stop().await {
        checks.push(check("scratch cluster stopped", false, e.to_string()));
    }
    DrillOutcome {
        checks,
        restore_seconds,
    }
}

/// Every table listed at backup start exists; row counts are reported (a busy cluster changes them).
async fn tables_present(catalog: &Catalog, restored: &Restored, checks: &mut Vec<CheckResult>) {
    for db in &catalog.databases {
        let name = format!("tables in {}", db.name);
        let Some(conn) = restored.databases.get(&db.name) else {
            continue;
        };
        let client = match conn.connect().await {
            Ok(c) => c,
            Err(e) => {
                checks.push(check(
                    name,
                    false,
                    format!("cannot connect to the restored database: {e}"),
                ));
                continue;
            }
        };
        let mut missing = Vec::new();
        let mut changed = Vec::new();
        for table in &db.tables {
            match restored_count(&client, table).await {
                Ok(count) => {
                    if count != table.rows {
                        changed.push(format!(
                            "{}.{}: {} → {count}",
                            table.schema, table.name, table.rows
                        ));
                    }
                }
                Err(e) => missing.push(format!("{}.{} ({e})", table.schema, table.name)),
            }
        }
        if missing.is_empty() {
            let mut detail = format!(
                "all {} tables listed at backup start exist",
                db.tables.len()
            );
            if changed.is_empty() {
                detail.push_str(" with the row counts of backup start");
            } else {
                detail.push_str(&format!(
                    "; {} changed while the backup ran (rows at start → restored): {}",
                    changed.len(),
                    changed
                        .iter()
                        .take(5)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            checks.push(check(name, true, detail));
        } else {
            checks.push(check(
                name,
                false,
                format!("missing after the restore: {}", missing.join("; ")),
            ));
        }
    }
}

/// `count(*)` of a catalog table in a restored database, or the server's message.
async fn restored_count(
    client: &tokio_postgres::Client,
    table: &crate::snapshot::CatalogTable,
) -> Result<i64, String> {
    let sql = format!(
        "SELECT count(*) FROM {}.{}",
        quote_ident(&table.schema),
        quote_ident(&table.name)
    );
    client
        .query_one(&sql, &[])
        .await
        .map(|row| row.get(0))
        .map_err(|e| db_message(&e))
}

/// The server's message of a query error, else the driver's.
fn db_message(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map_or_else(|| e.to_string(), |d| d.message().to_owned())
}

fn manifest_dumps(manifest: &Manifest) -> usize {
    manifest
        .objects
        .iter()
        .filter(|o| o.kind == ObjectKind::PgDumpCustom)
        .count()
}

#[allow(clippy::too_many_arguments)]
async fn restore_all<S: ReadStore>(
    store: &S,
    manifest: &Manifest,
    identities: Identities,
    plan: &DrillPlan,
    admin: &ConnParams,
    local: bool,
    tools_dir: Option<PathBuf>,
    checks: &mut Vec<CheckResult>,
) -> Restored {
    let mut restored = Restored {
        admin: admin.clone(),
        databases: BTreeMap::new(),
    };
    let tag: String = {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let mut rng = rand::rng();
        (0..6)
            .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
            .collect()
    };
    let mut globals_done = false;
    for entry in manifest
        .objects
        .iter()
        .filter(|o| o.kind == ObjectKind::PgDumpCustom)
    {
        let original = entry.database.clone().unwrap_or_else(|| entry.name.clone());
        // Locally the original names are kept (owners and grants come with the globals); on a shared scratch
        // server every drill gets fresh, unique names.
        let target_name = if local {
            original.clone()
        } else {
            scratch_name(&tag, &original)
        };
        let target = DatabaseTarget {
            conn: admin.with_dbname(&target_name),
            confirm: None,
            with_globals: local && !globals_done,
            search_dirs: plan.search_dirs.clone(),
            pg_bin_dir: tools_dir.clone(),
        };
        let name = format!("restore {original}");
        match restore_to_database(store, manifest, entry, identities.clone(), &target, None).await {
            Ok(report) => {
                if target.with_globals {
                    globals_done = true;
                }
                let mut detail = format!(
                    "pg_restore --single-transaction into {target_name}: {} payload bytes",
                    report.dump.payload_bytes
                );
                if !report.globals_errors.is_empty() {
                    detail.push_str(&format!(
                        "; globals applied with {} expected errors (e.g. roles that exist in a fresh cluster: {})",
                        report.globals_errors.len(),
                        report.globals_errors.first().map(String::as_str).unwrap_or_default()
                    ));
                }
                checks.push(check(name, true, detail));
                restored.databases.insert(original, target.conn.clone());
            }
            Err(e) => checks.push(check(name, false, e.to_string())),
        }
    }
    restored
}

/// `lifeboat_drill_<tag>_<db>`, at most 63 bytes (PostgreSQL's identifier limit).
fn scratch_name(tag: &str, original: &str) -> String {
    let mut name = format!("lifeboat_drill_{tag}_");
    for c in original.chars() {
        if name.len() + c.len_utf8() > 63 {
            break;
        }
        name.push(c);
    }
    name
}

async fn row_counts(catalog: &Catalog, restored: &Restored, checks: &mut Vec<CheckResult>) {
    for db in &catalog.databases {
        let name = format!("row counts in {}", db.name);
        let Some(conn) = restored.databases.get(&db.name) else {
            checks.push(check(name, false, "the database was not restored"));
            continue;
        };
        let client = match conn.connect().await {
            Ok(c) => c,
            Err(e) => {
                checks.push(check(
                    name,
                    false,
                    format!("cannot connect to the restored database: {e}"),
                ));
                continue;
            }
        };
        let mut problems = Vec::new();
        let mut rows_total: i64 = 0;
        for table in &db.tables {
            match restored_count(&client, table).await {
                Ok(count) => {
                    rows_total += count;
                    if count != table.rows {
                        problems.push(format!(
                            "table {}.{}: {} rows at dump time, {count} restored",
                            table.schema, table.name, table.rows
                        ));
                    }
                }
                Err(e) => problems.push(format!(
                    "table {}.{}: missing or unreadable after the restore ({e})",
                    table.schema, table.name
                )),
            }
        }
        if problems.is_empty() {
            checks.push(check(
                name,
                true,
                format!("all {} tables exist with the exact row counts of dump time ({rows_total} rows)", db.tables.len()),
            ));
        } else {
            checks.push(check(name, false, problems.join("; ")));
        }
    }
}

async fn sql_checks(plan: &DrillPlan, restored: &Restored, checks: &mut Vec<CheckResult>) {
    if plan.checks.is_empty() {
        return;
    }
    let Some(conn) = plan
        .checks_database
        .as_ref()
        .and_then(|db| restored.databases.get(db))
    else {
        checks.push(check(
            "SQL checks",
            false,
            format!(
                "database {:?} for the checks is not in the snapshot",
                plan.checks_database.as_deref().unwrap_or("(none)")
            ),
        ));
        return;
    };
    let client = match conn.connect().await {
        Ok(c) => c,
        Err(e) => {
            checks.push(check("SQL checks", false, format!("cannot connect: {e}")));
            return;
        }
    };
    for sql in &plan.checks {
        let name = format!("check `{sql}`");
        let outcome = match client.query(sql.as_str(), &[]).await {
            Err(e) => Err(format!("the query failed: {}", db_message(&e))),
            Ok(rows) => match rows.as_slice() {
                [row] if row.len() == 1 => match row.try_get::<_, Option<bool>>(0) {
                    Ok(Some(true)) => Ok("true".to_owned()),
                    Ok(Some(false)) => Err("returned false".to_owned()),
                    Ok(None) => Err("returned NULL".to_owned()),
                    Err(_) => Err(
                        "does not return a boolean (write e.g. `select count(*) > 0 from t`)"
                            .to_owned(),
                    ),
                },
                rows => Err(format!(
                    "must return exactly one row with one boolean column; returned {} rows",
                    rows.len()
                )),
            },
        };
        checks.push(match outcome {
            Ok(d) => check(name, true, d),
            Err(d) => check(name, false, d),
        });
    }
}

async fn drop_scratch_databases(restored: &Restored, checks: &mut Vec<CheckResult>) {
    if restored.databases.is_empty() {
        return;
    }
    let client = match restored.admin.connect().await {
        Ok(c) => c,
        Err(e) => {
            checks.push(check(
                "scratch databases dropped",
                false,
                format!("cannot connect: {e}"),
            ));
            return;
        }
    };
    let mut failed = Vec::new();
    for conn in restored.databases.values() {
        let sql = format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            quote_ident(&conn.dbname)
        );
        if let Err(e) = client.batch_execute(&sql).await {
            failed.push(format!("{}: {e}", conn.dbname));
        }
    }
    if !failed.is_empty() {
        checks.push(check(
            "scratch databases dropped",
            false,
            format!("drop them by hand: {}", failed.join("; ")),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_names_are_unique_per_drill_and_fit_postgres_identifiers() {
        assert_eq!(scratch_name("abc123", "app"), "lifeboat_drill_abc123_app");
        let long = "x".repeat(100);
        let name = scratch_name("abc123", &long);
        assert_eq!(name.len(), 63);
        assert!(name.starts_with("lifeboat_drill_abc123_x"));
        let unicode = scratch_name("abc123", &"é".repeat(40));
        assert!(unicode.len() <= 63);
    }
}
