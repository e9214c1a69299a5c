//! Opening databases: folders and URLs, and bad input (not a database, newer schema, unwritable path)
//! failing with a clear error that names the path, having written nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use duroxide_core::Provider;
use duroxide_sqlite::{OpenError, SqliteProvider, SCHEMA_VERSION};

mod common;

/// Every file under `dir` with its bytes, to prove that a failed open wrote nothing.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(folder) = pending.pop() {
        for entry in std::fs::read_dir(&folder).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                files.insert(path.clone(), Vec::new());
                pending.push(path);
            } else {
                files.insert(path.clone(), std::fs::read(&path).expect("read"));
            }
        }
    }
    files
}

fn assert_names(err: &OpenError, path: &Path, reason: &str) {
    let text = err.to_string();
    assert!(
        text.contains(&path.display().to_string()),
        "error does not name {}: {text}",
        path.display()
    );
    assert!(
        text.to_lowercase().contains(reason),
        "error does not say {reason:?}: {text}"
    );
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_refused_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("notes.db");
    std::fs::write(&path, "these are my notes, not a database\n".repeat(200)).expect("write");
    let before = snapshot(dir.path());

    let err = SqliteProvider::open(&path).expect_err("must refuse");
    assert!(matches!(err, OpenError::NotADatabase { .. }), "{err:?}");
    assert_names(&err, &path, "not a sqlite database");
    assert!(!err.is_retryable());
    assert_eq!(snapshot(dir.path()), before, "the failed open changed files");
}

#[tokio::test]
async fn a_database_from_a_newer_schema_version_is_refused_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("future.db");
    {
        let conn = rusqlite::Connection::open(&path).expect("raw open");
        conn.execute_batch(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, description TEXT NOT NULL,
                                             applied_at_ms INTEGER NOT NULL);
             INSERT INTO schema_migrations VALUES (1, 'initial schema', 0), (999, 'from the future', 0);",
        )
        .expect("raw schema");
    }
    let before = snapshot(dir.path());

    let err = SqliteProvider::open(&path).expect_err("must refuse");
    assert!(
        matches!(err, OpenError::SchemaTooNew { found: 999, supported, .. } if supported == SCHEMA_VERSION),
        "{err:?}"
    );
    assert_names(&err, &path, "schema version 999");
    assert_eq!(snapshot(dir.path()), before, "the failed open changed files");
}

#[tokio::test]
async fn a_provider_database_bumped_to_a_newer_version_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("app.db");
    drop(SqliteProvider::open(&path).expect("first open"));
    {
        let conn = rusqlite::Connection::open(&path).expect("raw open");
        conn.execute(
            "INSERT INTO schema_migrations VALUES (?1, 'newer build', 0)",
            [SCHEMA_VERSION + 1],
        )
        .expect("bump");
    }
    let err = SqliteProvider::open(&path).expect_err("must refuse");
    assert!(matches!(err, OpenError::SchemaTooNew { .. }), "{err:?}");
    assert_names(&err, &path, "newer");
}

#[tokio::test]
async fn a_path_under_a_regular_file_is_refused_without_writing() {
    // Tests run as root, which ignores permission bits; a parent that is a regular file fails for root too.
    let dir = tempfile::tempdir().expect("tempdir");
    let blocker = dir.path().join("blocker");
    std::fs::write(&blocker, b"a file, not a folder").expect("write");
    let path = blocker.join("nested").join("app.db");
    let before = snapshot(dir.path());

    let err = SqliteProvider::open(&path).expect_err("must refuse");
    assert!(matches!(err, OpenError::Folder { .. }), "{err:?}");
    assert_names(&err, &path, "cannot create the folder");
    assert_eq!(snapshot(dir.path()), before, "the failed open changed files");

    let direct = blocker.join("app.db");
    let err = SqliteProvider::open(&direct).expect_err("must refuse");
    assert_names(&err, &direct, "not a folder");
    assert_eq!(snapshot(dir.path()), before, "the failed open changed files");
}

#[tokio::test]
async fn a_folder_is_not_a_database() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = SqliteProvider::open(dir.path()).expect_err("must refuse");
    assert_names(&err, dir.path(), "folder");
}

#[tokio::test]
async fn an_empty_location_is_invalid() {
    for location in ["", "sqlite:", "sqlite://"] {
        let err = SqliteProvider::open(location).expect_err("must refuse");
        assert!(
            matches!(err, OpenError::InvalidLocation { .. }),
            "{location:?}: {err:?}"
        );
    }
}

#[tokio::test]
async fn missing_parent_folders_are_created_and_data_survives_reopening() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("a").join("b").join("app.db");
    let provider = SqliteProvider::open(&path).expect("open");
    assert_eq!(provider.path(), Some(path.as_path()));
    assert!(provider
        .create_instance(common::start("kept"))
        .await
        .expect("create"));
    drop(provider);
    assert!(path.is_file());

    let url = format!("sqlite://{}", path.display());
    let reopened = SqliteProvider::open(&url).expect("reopen by URL");
    let info = reopened
        .get_instance_info("kept")
        .await
        .expect("read")
        .expect("instance kept");
    assert_eq!(info.name, "Flow");
}

#[tokio::test]
async fn each_in_memory_database_is_private() {
    let first = SqliteProvider::in_memory().expect("first");
    let second = SqliteProvider::in_memory().expect("second");
    assert!(first
        .create_instance(common::start("mine"))
        .await
        .expect("create"));
    assert!(second.get_instance_info("mine").await.expect("read").is_none());
    assert!(first.get_instance_info("mine").await.expect("read").is_some());
    let memory_url = SqliteProvider::open("sqlite::memory:").expect("memory URL");
    assert!(memory_url.path().is_none());
}

#[tokio::test]
async fn full_durability_opens_the_same_schema() {
    use duroxide_sqlite::{Durability, SqliteOptions};
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("full.db");
    let options = SqliteOptions::default().with_durability(Durability::Full);
    let provider = SqliteProvider::open_with(&path, &options).expect("open");
    assert!(provider
        .create_instance(common::start("durable"))
        .await
        .expect("create"));
    drop(provider);
    let reopened = SqliteProvider::open(&path).expect("reopen with the default durability");
    assert!(reopened
        .get_instance_info("durable")
        .await
        .expect("read")
        .is_some());
}
