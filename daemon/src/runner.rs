//! Builds a job's source, store and settings from the validated config, and runs it once.
//! Secret references and recipient files are resolved here (never in the config crate), and never logged.

use crate::audit::Audits;
use crate::hooks::run_hook;
use chrono::Utc;
use lifeboat_config::{Config, JobConfig, StoreConfig};
use lifeboat_core::backup::{run_backup, BackupError, BackupReport, BackupSettings, Target};
use lifeboat_core::independence;
use lifeboat_core::pipeline::EncodeSettings;
use lifeboat_core::recipients::load_recipients;
use lifeboat_core::snapshot::{ManifestSigner, SnapshotId, TrustedKeys};
use lifeboat_core::source::AnySource;
use lifeboat_core::store::AnyStore;
use std::sync::Arc;
use std::time::Instant;
use tokio_util::sync::CancellationToken;

/// Why a job could not run.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The job or its parts are misconfigured (exit code 2).
    #[error("{0}")]
    Config(String),
    /// The backup itself failed (exit code 1).
    #[error(transparent)]
    Backup(Box<BackupError>),
    /// The job's `before` hook failed, so the source was not read (exit code 1).
    #[error(transparent)]
    Hook(#[from] crate::hooks::HookError),
    /// The store failed its immutability audit and requires immutability (exit code 1).
    #[error("{message}")]
    NotImmutable {
        /// The store.
        store: String,
        /// What failed, and the fixes.
        message: String,
    },
    /// The attempt ran past the job's `timeout` and was cancelled (exit code 1).
    #[error("timed out after {}s (the job's timeout) and was cancelled: no manifest was written", .0.as_secs())]
    TimedOut(std::time::Duration),
}

impl From<BackupError> for JobError {
    fn from(e: BackupError) -> Self {
        JobError::Backup(Box::new(e))
    }
}

impl JobError {
    /// The documented exit code.
    pub fn exit_code(&self) -> i32 {
        match self {
            JobError::Config(_) => crate::EXIT_USAGE,
            JobError::Backup(_)
            | JobError::Hook(_)
            | JobError::TimedOut(_)
            | JobError::NotImmutable { .. } => crate::EXIT_FAILED,
        }
    }

    /// The store this attempt failed on, when a store was the cause.
    pub fn failed_store(&self) -> Option<&str> {
        match self {
            JobError::NotImmutable { store, .. } => Some(store),
            JobError::Backup(b) => match b.as_ref() {
                BackupError::Store(e) | BackupError::NotImmutable(e) => Some(e.store()),
                _ => None,
            },
            _ => None,
        }
    }
}

/// A job ready to run.
pub struct PreparedJob {
    /// The source.
    pub source: AnySource,
    /// The stores every snapshot goes to, with their lock settings.
    pub targets: Vec<Target<AnyStore>>,
    /// Pipeline settings.
    pub settings: BackupSettings,
}

/// Looks a job up by name, with a hint listing the configured jobs.
pub fn job<'c>(config: &'c Config, name: &str) -> Result<&'c JobConfig, JobError> {
    config.jobs.get(name).ok_or_else(|| {
        JobError::Config(format!(
            "no job named {name:?} in {}; configured jobs: {}",
            config.origin,
            config.jobs.keys().cloned().collect::<Vec<_>>().join(", ")
        ))
    })
}

/// Builds everything a job needs. Fails with [`JobError::Config`] on unusable settings or secrets.
pub async fn prepare(config: &Config, name: &str) -> Result<PreparedJob, JobError> {
    let job = job(config, name)?;
    let store_cfgs = store_configs(config, job)?;
    let recipients =
        load_recipients(&config.encryption).map_err(|e| JobError::Config(e.to_string()))?;
    let signer = signing(config)?;
    if signer.is_none() {
        tracing::warn!(job = %name, "No [encryption] signing_key_file: this snapshot's manifest will be unsigned, and restoring it will need --allow-unsigned.");
    }
    let source = AnySource::from_config(name, &job.source, &config.daemon.pg_bin_dirs)
        .map_err(JobError::Config)?;
    let mut targets = Vec::with_capacity(store_cfgs.len());
    for store_cfg in &store_cfgs {
        let store = AnyStore::build(store_cfg)
            .await
            .map_err(|e| JobError::Config(format!("stores.{}: {e}", store_cfg.name)))?;
        targets.push(Target {
            store,
            lock_mode: store_cfg.lock.mode,
            retention: store_cfg.lock.retention,
        });
    }
    // One part size for every store (the stream is cut once): the largest configured.
    let part_size = store_cfgs
        .iter()
        .map(|c| c.part_size())
        .max()
        .unwrap_or(lifeboat_config::DEFAULT_PART_SIZE);
    let settings = BackupSettings {
        job: name.to_owned(),
        compression: EncodeSettings {
            level: job.compression.level,
            threads: job.compression.threads,
        },
        part_size,
        recipients: Arc::new(recipients),
        signer,
    };
    Ok(PreparedJob {
        source,
        targets,
        settings,
    })
}

/// The configs of a job's stores, in the job's order.
pub fn store_configs<'c>(
    config: &'c Config,
    job: &JobConfig,
) -> Result<Vec<&'c StoreConfig>, JobError> {
    job.stores
        .iter()
        .map(|s| {
            config.stores.get(s).ok_or_else(|| {
                JobError::Config(format!(
                    "job {:?} names store {s:?}, which is not configured",
                    job.name
                ))
            })
        })
        .collect()
}

/// Loads the manifest-signing key, if configured. A configured key that does not load is a config error.
pub fn signing(config: &Config) -> Result<Option<Arc<ManifestSigner>>, JobError> {
    let signer = ManifestSigner::from_config(&config.encryption)
        .map_err(|e| JobError::Config(e.to_string()))?;
    Ok(signer.map(Arc::new))
}

/// The keys whose signatures count: `signing_public_keys` plus the public half of the daemon's own signing key.
pub fn trusted_keys(config: &Config) -> Result<TrustedKeys, JobError> {
    let mut trusted = TrustedKeys::from_config(&config.encryption)
        .map_err(|e| JobError::Config(e.to_string()))?;
    if let Some(signer) = signing(config)? {
        trusted.add_signer(&signer);
    }
    Ok(trusted)
}

/// Runs the `after` hook, if any. Its failure is logged as an error but does not undo a complete snapshot.
async fn run_after_hook(job: &str, hooks: &lifeboat_config::Hooks) {
    if let Some(after) = &hooks.after {
        if let Err(e) = run_hook(job, "after", after, hooks.timeout).await {
            tracing::error!(job = %job, error = %e, "The after hook failed: the source may be left paused or frozen; fix it now.");
        }
    }
}

/// Runs one job now, logging one line when it starts and one when it ends (job, snapshot id, bytes, duration,
/// result).
pub async fn run_job(
    config: &Config,
    name: &str,
    cancel: CancellationToken,
    audits: &Audits,
) -> Result<BackupReport, JobError> {
    let id = SnapshotId::new(Utc::now());
    let started = Instant::now();
    tracing::info!(job = %name, snapshot = %id, "Backup run started.");
    let result = async {
        let mut prepared = prepare(config, name).await?;
        let job_cfg = job(config, name)?;
        for store_cfg in store_configs(config, job_cfg)? {
            let findings = independence::check(job_cfg, store_cfg);
            for warning in &findings.warnings {
                tracing::warn!(job = %name, store = %store_cfg.name, warning = %warning, "The store is not fully independent of the source.");
            }
            if !findings.errors.is_empty() {
                return Err(JobError::Config(format!(
                    "refusing to back up: {}",
                    findings.errors.join("; ")
                )));
            }
            audits
                .gate(config, store_cfg)
                .await
                .map_err(|message| JobError::NotImmutable {
                    store: store_cfg.name.clone(),
                    message,
                })?;
        }
        let hooks = job_cfg.hooks.clone();
        if let Some(before) = &hooks.before {
            if let Err(e) = run_hook(name, "before", before, hooks.timeout).await {
                run_after_hook(name, &hooks).await;
                return Err(e.into());
            }
        }
        let backup = run_backup(
            &mut prepared.source,
            &prepared.targets,
            &prepared.settings,
            id.clone(),
            cancel,
        )
        .await;
        // `after` runs whatever happened: it may be what unfreezes the source.
        run_after_hook(name, &hooks).await;
        Ok::<_, JobError>(backup?)
    }
    .await;
    let duration_s = started.elapsed().as_secs_f64();
    match &result {
        Ok(report) => tracing::info!(
            job = %name,
            snapshot = %id,
            result = "success",
            source_bytes = report.manifest.payload_bytes(),
            stored_bytes = report.manifest.stored_bytes(),
            duration_s,
            "Backup run finished."
        ),
        Err(e) => tracing::error!(
            job = %name,
            snapshot = %id,
            result = "failure",
            duration_s,
            error = %e,
            "Backup run finished; no manifest was written."
        ),
    }
    result
}
