//! A fresh, empty PostgreSQL database for one test, on the throwaway cluster `scripts/test`
//! starts (it exports `TETHER_TEST_POSTGRES_URL`, an admin URL to that cluster). Without that
//! variable a test that asks for a database fails with a line saying how to get one: PostgreSQL
//! tests are never skipped.
//!
//! Each [`TestDatabase`] is created with a unique name and dropped (`WITH (FORCE)`, closing what
//! is still connected) when the value is dropped, so runs do not accumulate databases.

use std::time::Duration;

use sqlx::{Connection, PgConnection};

/// The variable naming the cluster to create test databases on.
pub const ADMIN_URL_VAR: &str = "TETHER_TEST_POSTGRES_URL";

/// One test's database; dropped with this value.
#[derive(Debug)]
pub struct TestDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl TestDatabase {
    /// Creates an empty database. Panics (failing the test) if the cluster is not configured or
    /// cannot be reached.
    pub async fn create() -> Self {
        let admin_url = admin_url();
        let name = format!("tether_test_{}", uuid::Uuid::now_v7().simple());
        let mut admin = connect(&admin_url).await;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|e| panic!("creating test database {name}: {e}"));
        let _ = admin.close().await;
        let url = with_database(&admin_url, &name);
        Self {
            admin_url,
            name,
            url,
        }
    }

    /// [`Self::create`] for a test without a runtime (one that drives child processes).
    pub fn create_blocking() -> Self {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(Self::create())
    }

    /// Whether `TETHER_TEST_BACKEND` asks for PostgreSQL (`postgres`) rather than SQLite (unset,
    /// empty or `sqlite`); any other value fails the test.
    pub fn wanted() -> bool {
        match std::env::var("TETHER_TEST_BACKEND").as_deref() {
            Err(_) | Ok("") | Ok("sqlite") => false,
            Ok("postgres") => true,
            Ok(other) => panic!("TETHER_TEST_BACKEND={other}: use sqlite or postgres"),
        }
    }

    /// The URL of this database (what `--database-url` takes).
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // Drop may run inside a runtime: drop the database from a thread with its own.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let mut admin = PgConnection::connect(&admin_url).await?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut admin)
                    .await?;
                admin.close().await
            })
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!("note: could not drop test database {}: {e}", self.name);
        }
    }
}

fn admin_url() -> String {
    std::env::var(ADMIN_URL_VAR).unwrap_or_else(|_| {
        panic!(
            "{ADMIN_URL_VAR} is not set: PostgreSQL tests need a cluster. Run scripts/test (it \
             starts a throwaway one), or start one and export {ADMIN_URL_VAR}=postgres://postgres@127.0.0.1:PORT/postgres"
        )
    })
}

async fn connect(url: &str) -> PgConnection {
    let mut last = None;
    // The cluster may be busy creating other tests' databases: retry briefly.
    for _ in 0..20 {
        match PgConnection::connect(url).await {
            Ok(c) => return c,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "cannot reach the test PostgreSQL cluster ({ADMIN_URL_VAR}): {}",
        last.map(|e| e.to_string()).unwrap_or_default()
    )
}

/// `url` with its database (the path) replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let authority_end = base
        .find("://")
        .map(|i| i + 3)
        .and_then(|start| base[start..].find('/').map(|j| start + j))
        .unwrap_or(base.len());
    let mut out = format!("{}/{name}", &base[..authority_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn the_database_of_a_url_is_replaced() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "t1"),
            "postgres://postgres@127.0.0.1:5432/t1"
        );
        assert_eq!(
            with_database("postgres://u@h:1?sslmode=disable", "t1"),
            "postgres://u@h:1/t1?sslmode=disable"
        );
    }
}

/// A PostgreSQL cluster of one test's own, for tests that stop and start the database itself (the
/// shared cluster serves every other test at the same time). Made with `initdb` as the `postgres`
/// user (initdb refuses root) in a temporary directory, on a free loopback port, trust
/// authentication; stopped and deleted on drop.
#[derive(Debug)]
pub struct OwnCluster {
    dir: std::path::PathBuf,
    port: u16,
}

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

impl OwnCluster {
    /// Panics (failing the test) if PostgreSQL 15 is not installed or the cluster does not start.
    pub fn start() -> Self {
        let dir =
            std::env::temp_dir().join(format!("tether-own-pg-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).expect("cluster dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let c = Self { dir, port };
        c.run(
            &["chown", "-R", "postgres:", &c.dir.display().to_string()],
            false,
        );
        let data = c.dir.join("data").display().to_string();
        c.pg(&[
            &format!("{PG_BIN}/initdb"),
            "-D",
            &data,
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-sync",
        ]);
        c.start_again();
        c
    }

    /// An admin URL of this cluster.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server (fast shutdown: connections are cut).
    pub fn stop(&self) {
        let data = self.dir.join("data").display().to_string();
        self.pg(&[
            &format!("{PG_BIN}/pg_ctl"),
            "-D",
            &data,
            "-m",
            "fast",
            "-w",
            "stop",
        ]);
    }

    /// Starts the server (again), on the same port.
    pub fn start_again(&self) {
        let data = self.dir.join("data").display().to_string();
        let log = self.dir.join("log").display().to_string();
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off",
            self.port,
            self.dir.display()
        );
        self.pg(&[
            &format!("{PG_BIN}/pg_ctl"),
            "-D",
            &data,
            "-l",
            &log,
            "-w",
            "-o",
            &opts,
            "start",
        ]);
    }

    /// A PostgreSQL program, as the `postgres` user when this is root.
    fn pg(&self, args: &[&str]) {
        self.run(args, true);
    }

    /// Runs `args`; `as_postgres`: as the cluster's owner. As a plain user, everything runs as
    /// that user and nothing needs handing over (a `chown` is skipped).
    fn run(&self, args: &[&str], as_postgres: bool) {
        let root = std::process::Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false);
        if !root && !as_postgres {
            return;
        }
        let mut cmd = if root && as_postgres {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).args(args);
            c
        } else {
            let mut c = std::process::Command::new(args[0]);
            c.args(&args[1..]);
            c
        };
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("running {args:?}: {e} (is PostgreSQL 15 installed?)"));
        assert!(
            out.status.success(),
            "{args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        let data = self.dir.join("data").display().to_string();
        let _ = std::process::Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .args([
                &format!("{PG_BIN}/pg_ctl"),
                "-D",
                &data,
                "-m",
                "immediate",
                "-w",
                "stop",
            ])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
