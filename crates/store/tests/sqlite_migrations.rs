//! The SQLite backend's migrations: checksummed by `sqlx::migrate!`, and databases made by the
//! earlier hand-rolled runner (a `schema_migrations` table without checksums) move over intact.

use std::path::Path;

use sqlx::SqlitePool;
use tether_store::sqlite::SqliteStore;
use tether_store::RunnerStore;

async fn raw(path: &Path) -> SqlitePool {
    sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=rwc", path.display()))
        .await
        .expect("raw connection")
}

fn migration_files() -> Vec<(i64, String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("migrations dir")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let stem = p.file_stem().expect("stem").to_string_lossy().into_owned();
            let (version, name) = stem.split_once('_').expect("NNNN_name");
            (
                version.parse().expect("version"),
                name.to_owned(),
                std::fs::read_to_string(&p).expect("read"),
            )
        })
        .collect()
}

/// A database exactly as the hand-rolled runner left it: every migration applied and recorded
/// in `schema_migrations (version, name, applied_at)`, plus a runner row.
async fn hand_rolled_database(path: &Path) {
    let pool = raw(path).await;
    sqlx::raw_sql(
        "CREATE TABLE schema_migrations (
            version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)",
    )
    .execute(&pool)
    .await
    .expect("schema_migrations");
    for (version, name, sql) in migration_files() {
        sqlx::raw_sql(&sql).execute(&pool).await.expect("migration");
        sqlx::query("INSERT INTO schema_migrations VALUES (?, ?, 0)")
            .bind(version)
            .bind(name)
            .execute(&pool)
            .await
            .expect("record");
    }
    sqlx::query(
        "INSERT INTO runners (id, name, description, platform, client_id, created_at, created_by)
         VALUES ('3f2504e0-4f89-41d3-9a0c-0305e82c3301', 'old', '', 'gke', 'tcid_abcdefghijklmnopqrstuv', 0, 'user:test')",
    )
    .execute(&pool)
    .await
    .expect("runner");
    pool.close().await;
}

#[tokio::test]
async fn a_database_of_the_hand_rolled_runner_moves_to_checksummed_migrations() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("t.db");
    hand_rolled_database(&path).await;
    let store = SqliteStore::open(&path)
        .await
        .expect("open the old database");
    let runners = store.list_runners(None, 10).await.expect("list");
    assert_eq!(runners.len(), 1, "its data is kept");
    assert_eq!(runners[0].name.as_str(), "old");
    store.close().await;

    let pool = raw(&path).await;
    let recorded: Vec<(i64, Vec<u8>)> =
        sqlx::query_as("SELECT version, checksum FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&pool)
            .await
            .expect("sqlx table");
    let files = migration_files();
    assert_eq!(
        recorded.len(),
        files.len(),
        "every applied migration is recorded"
    );
    assert!(
        recorded.iter().all(|(_, sum)| sum.len() == 48),
        "SHA-384 checksums"
    );
    let old: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'schema_migrations')",
    )
    .fetch_one(&pool)
    .await
    .expect("query");
    assert!(!old, "the old record is gone");
    pool.close().await;
    // And it opens again as any other database.
    SqliteStore::open(&path).await.expect("reopen");
}

#[tokio::test]
async fn a_database_whose_applied_migration_was_edited_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("t.db");
    SqliteStore::open(&path).await.expect("open").close().await;
    let pool = raw(&path).await;
    sqlx::query("UPDATE _sqlx_migrations SET checksum = x'00' WHERE version = 3")
        .execute(&pool)
        .await
        .expect("tamper");
    pool.close().await;
    let err = SqliteStore::open(&path).await.expect_err("refused");
    let shown = err.to_string();
    assert!(
        shown.contains("migration 3") && shown.contains("edited"),
        "{shown}"
    );
}

#[tokio::test]
async fn a_database_from_a_newer_tether_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("t.db");
    SqliteStore::open(&path).await.expect("open").close().await;
    let pool = raw(&path).await;
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES (9999, 'future', TRUE, x'00', 0)",
    )
    .execute(&pool)
    .await
    .expect("future migration");
    pool.close().await;
    let err = SqliteStore::open(&path).await.expect_err("refused");
    assert!(err.to_string().contains("newer tether"), "{err}");
}
