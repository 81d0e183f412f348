//! Child-process plumbing for sources and restores: spawn with piped stdout/stderr, collect stderr in the
//! background, and turn exit status plus stderr error lines into a `SourceError`. Children die when dropped.

use super::SourceError;
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};
use tokio::task::JoinHandle;

/// Most stderr kept per child (the rest is counted, not stored).
const STDERR_KEEP: usize = 64 * 1024;

/// A running child whose stdout is being consumed elsewhere.
pub struct ChildStream {
    program: String,
    child: Child,
    stderr: JoinHandle<Vec<String>>,
}

impl ChildStream {
    /// Spawns `cmd` with stdout piped (returned) and stderr collected. The child is killed if this is dropped.
    pub fn spawn(cmd: Command, program: &str) -> Result<(ChildStream, ChildStdout), SourceError> {
        let (stream, mut child_out) =
            Self::spawn_piped(cmd, program, Stdio::null(), Stdio::piped())?;
        let stdout = child_out
            .stdout
            .take()
            .ok_or_else(|| no_pipe(program, "stdout"))?;
        Ok((stream, stdout))
    }

    /// Spawns `cmd` with stdin piped (returned) for the caller to stream into; stdout is discarded and
    /// stderr collected. The child is killed if this is dropped.
    pub fn spawn_sink(
        cmd: Command,
        program: &str,
    ) -> Result<(ChildStream, tokio::process::ChildStdin), SourceError> {
        let (stream, mut pipes) = Self::spawn_piped(cmd, program, Stdio::piped(), Stdio::null())?;
        let stdin = pipes
            .stdin
            .take()
            .ok_or_else(|| no_pipe(program, "stdin"))?;
        Ok((stream, stdin))
    }

    /// Spawns `cmd` with stdin piped (for the caller to stream into) and stdout piped (for the caller to read);
    /// stderr collected. The child is killed if this is dropped.
    pub fn spawn_filter(
        cmd: Command,
        program: &str,
    ) -> Result<(ChildStream, tokio::process::ChildStdin, ChildStdout), SourceError> {
        let (stream, mut pipes) = Self::spawn_piped(cmd, program, Stdio::piped(), Stdio::piped())?;
        let stdin = pipes
            .stdin
            .take()
            .ok_or_else(|| no_pipe(program, "stdin"))?;
        let stdout = pipes
            .stdout
            .take()
            .ok_or_else(|| no_pipe(program, "stdout"))?;
        Ok((stream, stdin, stdout))
    }

    fn spawn_piped(
        mut cmd: Command,
        program: &str,
        stdin: Stdio,
        stdout: Stdio,
    ) -> Result<(ChildStream, Pipes), SourceError> {
        cmd.stdin(stdin)
            .stdout(stdout)
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| SourceError::Spawn {
            program: program.to_owned(),
            reason: e.to_string(),
        })?;
        let pipes = Pipes {
            stdin: child.stdin.take(),
            stdout: child.stdout.take(),
        };
        let stderr = child.stderr.take();
        let name = program.to_owned();
        let stderr = tokio::spawn(async move { collect_stderr(&name, stderr).await });
        Ok((
            ChildStream {
                program: program.to_owned(),
                child,
                stderr,
            },
            pipes,
        ))
    }

    /// Waits for the child; fails on a non-zero exit, a signal, or any `error`/`FATAL` line on stderr.
    pub async fn finish(mut self) -> Result<(), SourceError> {
        let status = self
            .child
            .wait()
            .await
            .map_err(|e| SourceError::ChildFailed {
                program: self.program.clone(),
                status: "could not be waited for".to_owned(),
                stderr: e.to_string(),
            })?;
        let lines = (&mut self.stderr).await.unwrap_or_default();
        let errors: Vec<&String> = lines.iter().filter(|l| is_error_line(l)).collect();
        if !status.success() || !errors.is_empty() {
            let shown: Vec<&str> = if errors.is_empty() {
                lines
                    .iter()
                    .rev()
                    .take(10)
                    .rev()
                    .map(String::as_str)
                    .collect()
            } else {
                errors.iter().take(10).map(|s| s.as_str()).collect()
            };
            return Err(SourceError::ChildFailed {
                program: self.program.clone(),
                status: describe_status(status),
                stderr: if shown.is_empty() {
                    "(no output on stderr)".to_owned()
                } else {
                    shown.join(" | ")
                },
            });
        }
        Ok(())
    }
}

fn describe_status(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => "unknown status".to_owned(),
    }
}

/// The pipes of a freshly spawned child.
struct Pipes {
    stdin: Option<tokio::process::ChildStdin>,
    stdout: Option<ChildStdout>,
}

fn no_pipe(program: &str, which: &str) -> SourceError {
    SourceError::Spawn {
        program: program.to_owned(),
        reason: format!("no {which} pipe"),
    }
}

/// Whether a stderr line of a PostgreSQL client tool reports an error.
fn is_error_line(line: &str) -> bool {
    let l = line.to_ascii_lowercase();
    l.contains("error:") || l.contains("fatal:") || l.contains("panic:")
}

async fn collect_stderr(program: &str, stderr: Option<tokio::process::ChildStderr>) -> Vec<String> {
    let Some(stderr) = stderr else {
        return Vec::new();
    };
    let mut lines = BufReader::new(stderr).lines();
    let mut kept = Vec::new();
    let mut size = 0usize;
    while let Ok(Some(line)) = lines.next_line().await {
        if is_error_line(&line) {
            tracing::warn!(program, line = %line, "Child process reported an error.");
        } else {
            tracing::info!(program, line = %line, "Child process output.");
        }
        if size < STDERR_KEEP {
            size += line.len();
            kept.push(line);
        }
    }
    kept
}

/// Runs a short command (e.g. `pg_dump --version`) and returns at most `limit` bytes of its stdout.
pub async fn capture_small(mut cmd: Command, limit: u64) -> std::io::Result<(bool, String)> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    let mut child = cmd.spawn()?;
    let mut out = String::new();
    if let Some(stdout) = child.stdout.take() {
        stdout.take(limit).read_to_string(&mut out).await?;
    }
    let status = child.wait().await?;
    Ok((status.success(), out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn non_zero_exit_and_stderr_errors_fail() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo data; echo 'pg_dump: error: boom' >&2; exit 0"]);
        let (child, mut out) = ChildStream::spawn(cmd, "sh").unwrap();
        let mut s = String::new();
        out.read_to_string(&mut s).await.unwrap();
        let err = child.finish().await.unwrap_err().to_string();
        assert!(err.contains("pg_dump: error: boom"), "{err}");

        let mut cmd = Command::new("sh");
        cmd.args(["-c", "exit 3"]);
        let (child, _out) = ChildStream::spawn(cmd, "sh").unwrap();
        let err = child.finish().await.unwrap_err().to_string();
        assert!(err.contains("exit code 3"), "{err}");

        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo 'pg_dump: warning: meh' >&2"]);
        let (child, _out) = ChildStream::spawn(cmd, "sh").unwrap();
        child.finish().await.unwrap();
    }
}
