//! Consistency hooks: a job's `before` command runs before the source is read, its `after` command after the
//! attempt whatever happened. Run without a shell, with a timeout; output goes to the log, never to the manifest.

use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

/// Why a hook failed.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// The program could not be started.
    #[error("{which} hook {program:?} could not be started: {reason}; check the path and that lifeboatd may run it")]
    Spawn {
        /// `before` or `after`.
        which: &'static str,
        /// The program.
        program: String,
        /// OS error.
        reason: String,
    },
    /// It exited non-zero or was killed.
    #[error("{which} hook {program:?} failed ({status}){}", last_line.as_ref().map(|l| format!(": {l}")).unwrap_or_default())]
    Failed {
        /// `before` or `after`.
        which: &'static str,
        /// The program.
        program: String,
        /// Exit status.
        status: String,
        /// Its last line of output, if any.
        last_line: Option<String>,
    },
    /// It ran longer than `hook_timeout` and was killed.
    #[error("{which} hook {program:?} did not finish within {}s and was killed; raise hook_timeout or fix the hook", timeout.as_secs())]
    Timeout {
        /// `before` or `after`.
        which: &'static str,
        /// The program.
        program: String,
        /// The limit.
        timeout: Duration,
    },
}

/// Runs one hook (`argv[0]` with the rest as arguments) and logs each line it prints under the job's name.
pub async fn run_hook(
    job: &str,
    which: &'static str,
    argv: &[String],
    timeout: Duration,
) -> Result<(), HookError> {
    let Some((program, args)) = argv.split_first() else {
        return Ok(());
    };
    let mut child = Command::new(program)
        .args(args)
        .env("LIFEBOAT_JOB", job)
        .env("LIFEBOAT_HOOK", which)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| HookError::Spawn {
            which,
            program: program.clone(),
            reason: e.to_string(),
        })?;
    tracing::info!(job = %job, hook = which, program = %program, "Running hook.");
    let mut outputs = Vec::new();
    for (stream, pipe) in [
        (
            "stdout",
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
        ),
        (
            "stderr",
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
        ),
    ] {
        let Some(pipe) = pipe else { continue };
        let job = job.to_owned();
        outputs.push(tokio::spawn(async move {
            let mut last = None;
            let mut lines = BufReader::new(pipe).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::info!(job = %job, hook = which, stream, line = %line, "Hook output.");
                if !line.trim().is_empty() {
                    last = Some(line);
                }
            }
            last
        }));
    }
    let status = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) => status,
        Ok(Err(e)) => {
            return Err(HookError::Failed {
                which,
                program: program.clone(),
                status: format!("could not be waited for: {e}"),
                last_line: None,
            })
        }
        Err(_) => {
            child.kill().await.ok();
            return Err(HookError::Timeout {
                which,
                program: program.clone(),
                timeout,
            });
        }
    };
    let mut last_line = None;
    for output in outputs {
        if let Ok(Some(line)) = output.await {
            last_line = Some(line);
        }
    }
    if status.success() {
        Ok(())
    } else {
        Err(HookError::Failed {
            which,
            program: program.clone(),
            status: status.to_string(),
            last_line,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn argv(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| (*s).to_owned()).collect()
    }

    #[tokio::test]
    async fn hooks_succeed_fail_and_time_out_with_clear_errors() {
        run_hook("j", "before", &argv(&["/bin/true"]), Duration::from_secs(5))
            .await
            .unwrap();
        let e = run_hook(
            "j",
            "after",
            &argv(&["/bin/sh", "-c", "echo cannot unfreeze >&2; exit 3"]),
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
        let text = e.to_string();
        assert!(text.contains("after hook \"/bin/sh\" failed"), "{text}");
        assert!(text.contains("cannot unfreeze"), "{text}");
        let e = run_hook(
            "j",
            "before",
            &argv(&["/bin/sleep", "10"]),
            Duration::from_millis(300),
        )
        .await
        .unwrap_err();
        assert!(matches!(e, HookError::Timeout { .. }), "{e}");
        let e = run_hook(
            "j",
            "before",
            &argv(&["/no/such/program"]),
            Duration::from_secs(1),
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains("could not be started"), "{e}");
    }
}
