//! A private radosgw on the shared test Ceph cluster, for store-outage tests: stopping it takes the store away
//! from one test only (same buckets and data as the shared gateway), starting it again brings the store back.

use crate::s3::S3Tier;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A radosgw process of this test's own, in the foreground, on its own port.
pub struct PrivateGateway {
    conf: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    name: String,
    child: Option<Child>,
    /// The tier as seen through this gateway (same credentials, this gateway's endpoint).
    pub tier: S3Tier,
}

impl PrivateGateway {
    /// Starts a gateway next to the shared one. Needs `LIFEBOAT_TEST_CEPH_CONF` (written by ceph-rgw-up.sh).
    pub fn start(shared: &S3Tier) -> PrivateGateway {
        let conf = PathBuf::from(std::env::var("LIFEBOAT_TEST_CEPH_CONF").expect(
            "LIFEBOAT_TEST_CEPH_CONF: start Ceph with tests/infra/ceph-rgw-up.sh (tests/run does)",
        ));
        let dir = tempfile::Builder::new()
            .prefix("lbgw")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let port = crate::daemon::free_port();
        let mut tier = shared.clone();
        tier.endpoint = format!("http://127.0.0.1:{port}");
        let name = format!("client.rgw.t{port}");
        let mut gw = PrivateGateway {
            conf,
            dir,
            port,
            name,
            child: None,
            tier,
        };
        gw.resume();
        gw
    }

    /// Kills the gateway at once (a crash or network loss, not a graceful stop).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().ok();
            child.wait().ok();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while crate::daemon::http_get(self.port, "/").is_some() {
            assert!(
                Instant::now() < deadline,
                "gateway still answers after kill"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts the gateway (again) and waits until it answers.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "gateway already running");
        let d = self.dir.path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("radosgw.out"))
            .expect("log");
        let child = Command::new("radosgw")
            .arg("-f")
            .arg("-c")
            .arg(&self.conf)
            .args(["-n", &self.name])
            .arg(format!(
                "--rgw_frontends=beast endpoint=127.0.0.1:{}",
                self.port
            ))
            .arg(format!("--rgw_data={}", d.display()))
            .arg(format!("--admin_socket={}/gw.asok", d.display()))
            .arg(format!("--pid_file={}/gw.pid", d.display()))
            .arg(format!("--log_file={}/gw.log", d.display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn radosgw (apt-get install radosgw)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if crate::daemon::http_get(self.port, "/").is_some() {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "private radosgw exited ({status}):\n{}",
                    std::fs::read_to_string(d.join("radosgw.out")).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "private radosgw did not answer within 60 s"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for PrivateGateway {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().ok();
            child.wait().ok();
        }
    }
}
