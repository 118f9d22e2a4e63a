//! The SQLite database holds verifiers, sealed secrets and the audit trail: its files are readable
//! by their owner only, whatever the umask, and a database left readable by others is narrowed.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use tether_store::sqlite::SqliteStore;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).expect("file").permissions().mode() & 0o777
}

fn with_suffix(path: &Path, suffix: &str) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    name.into()
}

#[tokio::test]
async fn a_new_database_and_its_wal_are_created_owner_only() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("tether.db");
    let store = SqliteStore::open(&path).await.expect("open");
    // Migrations wrote through the WAL: the database, its -wal and -shm files exist now.
    for file in [
        path.clone(),
        with_suffix(&path, "-wal"),
        with_suffix(&path, "-shm"),
    ] {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
    drop(store);
}

#[tokio::test]
async fn an_existing_database_readable_by_others_is_narrowed_to_the_owner() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("tether.db");
    drop(SqliteStore::open(&path).await.expect("first open"));
    for file in [
        path.clone(),
        with_suffix(&path, "-wal"),
        with_suffix(&path, "-shm"),
    ] {
        if file.exists() {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        }
    }
    let _store = SqliteStore::open(&path).await.expect("second open");
    for file in [
        path.clone(),
        with_suffix(&path, "-wal"),
        with_suffix(&path, "-shm"),
    ] {
        if file.exists() {
            assert_eq!(mode(&file), 0o600, "{}", file.display());
        }
    }
}
