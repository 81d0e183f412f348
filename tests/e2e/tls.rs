//! PostgreSQL over TLS: libpq's `sslmode` values work for both Lifeboat's own connection (rustls) and
//! pg_dump (libpq), with `verify-full` checking the server against `sslrootcert`.

use crate::common::{backup, workspace};
use lifeboat_tests::lifeboat::{fs_store_toml, lifeboatd, pg_job_toml, write_config};
use lifeboat_tests::postgres::{run, running_as_root, PgCluster};
use lifeboat_tests::skip::{binary_on_path, require_or};
use std::path::Path;
use std::process::Command;

fn openssl(dir: &Path, args: &[&str]) {
    let out = run(Command::new("openssl").current_dir(dir).args(args)).unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and a server certificate for localhost / 127.0.0.1 signed by it.
fn make_ca_and_server_cert(dir: &Path, ca: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={ca}"),
            "-keyout",
            &format!("{ca}.key"),
            "-out",
            &format!("{ca}.crt"),
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            &format!("{ca}.crt"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "server.crt",
        ],
    );
}

fn enable_tls_only(pg: &PgCluster, certs: &Path) {
    let data = pg.data_dir();
    for f in ["server.crt", "server.key"] {
        std::fs::copy(certs.join(f), data.join(f)).unwrap();
        if running_as_root() {
            run(Command::new("chown").arg("postgres:").arg(data.join(f))).unwrap();
        }
    }
    run(Command::new("chmod")
        .arg("600")
        .arg(data.join("server.key")))
    .unwrap();
    let hba = data.join("pg_hba.conf");
    let old = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(
        &hba,
        format!("hostnossl all all 127.0.0.1/32 reject\nhostssl all all 127.0.0.1/32 trust\n{old}"),
    )
    .unwrap();
    pg.psql(
        "postgres",
        "alter system set ssl = on; select pg_reload_conf();",
    )
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_over_tls_with_verify_full() {
    if !require_or(
        "the openssl CLI",
        "apt-get install -y openssl",
        binary_on_path("openssl"),
    ) {
        return;
    }
    let pg = PgCluster::start().unwrap();
    pg.create_database("app").unwrap();
    pg.psql(
        "app",
        "create table t as select generate_series(1, 1000) i;",
    )
    .unwrap();
    let (dir, k) = workspace();
    let certs = dir.path().join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    make_ca_and_server_cert(&certs, "good-ca");
    openssl(
        &certs,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=other-ca",
            "-keyout",
            "other-ca.key",
            "-out",
            "other-ca.crt",
        ],
    );
    enable_tls_only(&pg, &certs);

    let url = |mode: &str, ca: &str| {
        format!(
            "postgres://postgres@localhost:{}/app?sslmode={mode}&sslrootcert={}",
            pg.port(),
            certs.join(ca).display()
        )
    };
    let store = dir.path().join("store");
    let config = write_config(
        dir.path(),
        &k.recipient,
        &[
            fs_store_toml("local", &store),
            pg_job_toml(
                "full",
                "local",
                &url("verify-full", "good-ca.crt"),
                &["app"],
                "",
            ),
            pg_job_toml(
                "require",
                "local",
                &format!(
                    "postgres://postgres@127.0.0.1:{}/app?sslmode=require",
                    pg.port()
                ),
                &["app"],
                "",
            ),
            pg_job_toml(
                "require-ca",
                "local",
                &url("require", "other-ca.crt"),
                &["app"],
                "",
            ),
            pg_job_toml(
                "wrongca",
                "local",
                &url("verify-full", "other-ca.crt"),
                &["app"],
                "",
            ),
            pg_job_toml(
                "plain",
                "local",
                &format!(
                    "postgres://postgres@localhost:{}/app?sslmode=disable",
                    pg.port()
                ),
                &["app"],
                "",
            ),
        ],
    );
    // The server refuses non-TLS connections, so success means both connections used TLS.
    backup(&config, "full");
    backup(&config, "require");
    // A certificate from another CA is refused; as in libpq, `require` with a root file verifies too.
    for job in ["wrongca", "require-ca"] {
        let out = lifeboatd(&config, &["run", job]);
        out.expect_code(1);
        assert!(
            out.stderr.to_lowercase().contains("certificate"),
            "{job}: {}",
            out.stderr
        );
    }
    let out = lifeboatd(&config, &["run", "plain"]);
    out.expect_code(1);
    assert!(
        out.stderr.contains("no encryption") || out.stderr.contains("rejects"),
        "{}",
        out.stderr
    );
}
