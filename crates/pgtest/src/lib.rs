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
