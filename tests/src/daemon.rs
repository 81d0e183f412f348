//! Running `lifeboatd` as the long-running service from tests: a free port for its endpoint, HTTP GETs of
//! `/metrics`, `/healthz`, `/readyz`, metric lookups, signals, and its log kept in a file.

use crate::lifeboat::bin;
use crate::postgres::run;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A free loopback port (bound and released; the race with other binders is accepted in tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// `[daemon]` table for a test: endpoint on `port`, fast probes, a short shutdown grace.
pub fn daemon_toml(port: u16, extra: &str) -> String {
    format!("[daemon]\nlisten = \"127.0.0.1:{port}\"\n{extra}\n")
}

/// A running `lifeboatd` service (killed on drop).
pub struct Daemon {
    child: Child,
    port: u16,
    log: PathBuf,
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// Body.
    pub body: String,
}

impl Daemon {
    /// Starts `lifeboatd --config CONFIG --log-format json` whose endpoint listens on `port`; stderr goes to
    /// `CONFIG_DIR/lifeboatd-N.log`. Waits until `/healthz` answers.
    pub fn start(config: &Path, port: u16) -> Daemon {
        let dir = config.parent().expect("config dir");
        let mut n = 0;
        let log = loop {
            let candidate = dir.join(format!("lifeboatd-{n}.log"));
            if !candidate.exists() {
                break candidate;
            }
            n += 1;
        };
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(bin("lifeboatd"))
            .arg("--config")
            .arg(config)
            .args(["--log-format", "json"])
            .env("RUST_LOG", "info,lifeboat_daemon=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn lifeboatd");
        let mut daemon = Daemon { child, port, log };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if daemon.get("/healthz").is_some_and(|a| a.status == 200) {
                return daemon;
            }
            if let Some(status) = daemon.child.try_wait().expect("try_wait") {
                panic!("lifeboatd exited at start ({status}):\n{}", daemon.log());
            }
            assert!(
                Instant::now() < deadline,
                "lifeboatd /healthz did not answer within 20 s:\n{}",
                daemon.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// GET `path` on the endpoint; `None` if nothing answers.
    pub fn get(&self, path: &str) -> Option<Answer> {
        http_get(self.port, path)
    }

    /// The `/metrics` text, waiting (up to 60 s) while it answers 503 during start-up; panics otherwise.
    pub fn metrics(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match self.get("/metrics") {
                Some(a) if a.status == 200 => return a.body,
                Some(a) if a.status == 503 && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                other => panic!("/metrics failed: {other:?}\n{}", self.log()),
            }
        }
    }

    /// The value of the sample `series` (e.g. `lifeboat_backup_runs_total{job="a",result="success"}`).
    pub fn metric(&self, series: &str) -> Option<f64> {
        metric(&self.metrics(), series)
    }

    /// Waits until `f(metrics text)` holds; panics with the last scrape and the log after `timeout`.
    pub fn wait_for(&self, what: &str, timeout: Duration, f: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.metrics();
            if f(&text) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}\n--- metrics:\n{text}\n--- log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Waits until `/readyz` answers `status`.
    pub fn wait_ready(&self, status: u16, timeout: Duration) -> Answer {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(a) = self.get("/readyz") {
                if a.status == status {
                    return a;
                }
            }
            assert!(
                Instant::now() < deadline,
                "/readyz did not answer {status} within {timeout:?}: {:?}\n{}",
                self.get("/readyz"),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Sends a signal (`"TERM"`, `"HUP"`, `"INT"`).
    pub fn signal(&self, name: &str) {
        let out = run(Command::new("kill").args([&format!("-{name}"), &self.pid().to_string()]))
            .expect("kill");
        assert!(out.status.success(), "kill -{name} failed");
    }

    /// Waits for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "lifeboatd did not exit within {timeout:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.child.kill().ok();
            self.child.wait().ok();
        }
    }
}

/// The value of the sample `series` in Prometheus text `text`.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let rest = l.strip_prefix(series)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}

/// A minimal HTTP/1.0 GET on 127.0.0.1 (the endpoint closes the connection after each answer).
pub fn http_get(port: u16, path: &str) -> Option<Answer> {
    let mut stream =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some(Answer {
        status,
        body: body.to_owned(),
    })
}
