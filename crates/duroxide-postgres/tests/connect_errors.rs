//! Bad input when connecting: an invalid URL, an unreachable host, rejected credentials, a bad schema
//! name, a missing database, a schema written by a newer version. Each fails with an error that starts
//! with `Failed to connect to PostgreSQL:`, names what is wrong, never shows the password, and leaves
//! nothing created behind.

use std::io::{Read, Write};
use std::net::TcpListener;

use duroxide_postgres::{ConnectError, PostgresProvider, SCHEMA_VERSION};

mod common;

const PREFIX: &str = "Failed to connect to PostgreSQL: ";

fn assert_clear(err: &ConnectError, mentions: &[&str]) {
    let text = err.to_string();
    assert!(text.starts_with(PREFIX), "{text}");
    for needle in mentions {
        assert!(
            text.contains(needle),
            "the error does not mention {needle:?}: {text}"
        );
    }
    assert!(!text.contains("hunter2"), "the error shows the password: {text}");
}

/// Whether a schema of exactly this name exists (other tests create schemas concurrently, so tests
/// ask about their own names only).
async fn schema_exists(client: &tokio_postgres::Client, name: &str) -> bool {
    client
        .query_opt("SELECT 1 FROM pg_namespace WHERE nspname::text = $1", &[&name])
        .await
        .expect("look up a schema")
        .is_some()
}

/// Every object in a schema with a fingerprint of its definition, plus the recorded versions.
async fn schema_contents(client: &tokio_postgres::Client, schema: &str) -> Vec<String> {
    let mut contents: Vec<String> = client
        .query(
            "SELECT c.relkind::text || ' ' || c.relname::text FROM pg_class AS c
             JOIN pg_namespace AS n ON n.oid = c.relnamespace WHERE n.nspname = $1
             UNION ALL
             SELECT 'f ' || p.proname::text || ' ' || md5(p.prosrc) FROM pg_proc AS p
             JOIN pg_namespace AS n ON n.oid = p.pronamespace WHERE n.nspname = $1
             ORDER BY 1",
            &[&schema],
        )
        .await
        .expect("list objects")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let versions: Vec<String> = client
        .query(
            &format!("SELECT version::text FROM \"{schema}\"._duroxide_migrations ORDER BY version"),
            &[],
        )
        .await
        .map(|rows| {
            rows.iter()
                .map(|r| format!("version {}", r.get::<_, String>(0)))
                .collect()
        })
        .unwrap_or_default();
    contents.extend(versions);
    contents
}

#[tokio::test]
async fn invalid_urls_are_refused_before_connecting() {
    for url in [
        "",
        "localhost:5432",
        "mysql://root:hunter2@127.0.0.1/db",
        "postgres://postgres:hunter2@127.0.0.1:notaport/postgres",
        "postgres:///postgres",
        "host=127.0.0.1 port='5432",
    ] {
        let err = PostgresProvider::connect(url).await.expect_err(url);
        assert!(matches!(err, ConnectError::InvalidUrl { .. }), "{url:?}: {err:?}");
        assert_clear(&err, &["invalid connection URL"]);
        assert!(!err.is_retryable(), "{url:?}");
    }
}

#[tokio::test]
async fn an_unreachable_host_is_named_and_retryable() {
    // Port 1 on the loopback: nothing listens there, so the connection is refused at once.
    let err = PostgresProvider::connect("postgres://postgres:hunter2@127.0.0.1:1/postgres")
        .await
        .expect_err("nothing listens on port 1");
    assert!(matches!(err, ConnectError::Unreachable { .. }), "{err:?}");
    assert_clear(&err, &["cannot reach", "127.0.0.1:1/postgres"]);
    assert!(err.is_retryable(), "a server that is down may come up");
}

/// Plays a PostgreSQL server that asks for a password and rejects it, exactly as a real server with
/// password authentication does (the shared test server may use trust authentication).
fn rejecting_server() -> (u16, std::thread::JoinHandle<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a local port");
    let port = listener.local_addr().expect("address").port();
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accept");
        let read_message = |stream: &mut std::net::TcpStream, tagged: bool| -> Vec<u8> {
            let mut tag = [0u8; 1];
            if tagged {
                stream.read_exact(&mut tag).expect("tag");
            }
            let mut len = [0u8; 4];
            stream.read_exact(&mut len).expect("length");
            let mut body = vec![0u8; u32::from_be_bytes(len) as usize - 4];
            stream.read_exact(&mut body).expect("body");
            body
        };
        // Startup (after declining an SSL or GSS encryption request, if the client sends one).
        let mut startup = read_message(&mut stream, false);
        while startup.starts_with(&[0x04, 0xd2]) {
            stream.write_all(b"N").expect("decline encryption");
            startup = read_message(&mut stream, false);
        }
        // AuthenticationCleartextPassword.
        stream
            .write_all(&[b'R', 0, 0, 0, 8, 0, 0, 0, 3])
            .expect("ask for the password");
        let password = read_message(&mut stream, true);
        let mut error = Vec::new();
        for (field, value) in [
            (b'S', "FATAL"),
            (b'V', "FATAL"),
            (b'C', "28P01"),
            (b'M', "password authentication failed for user \"alice\""),
        ] {
            error.push(field);
            error.extend_from_slice(value.as_bytes());
            error.push(0);
        }
        error.push(0);
        let mut response = vec![b'E'];
        response.extend_from_slice(&(error.len() as u32 + 4).to_be_bytes());
        response.extend_from_slice(&error);
        stream.write_all(&response).expect("reject");
        password
    });
    (port, server)
}

#[tokio::test]
async fn a_wrong_password_is_an_authentication_error() {
    let (port, server) = rejecting_server();
    let url = format!("postgres://alice:hunter2@127.0.0.1:{port}/orders");
    let err = PostgresProvider::connect(&url).await.expect_err("rejected");
    assert!(matches!(err, ConnectError::Authentication { .. }), "{err:?}");
    assert_clear(&err, &["authentication failed", "\"alice\"", "28P01"]);
    assert!(!err.is_retryable(), "the same password will fail again");
    let sent = server.join().expect("server");
    assert!(
        sent.starts_with(b"hunter2"),
        "the client sent the password it was given"
    );
}

#[tokio::test]
async fn an_unknown_role_is_an_authentication_error() {
    let config: tokio_postgres::Config = common::url().parse().expect("DUROXIDE_PG_URL parses");
    let client = common::plain_client().await;
    let schema = common::unique_schema();
    // Rebuild a URL from the test server's host and port with the unknown role.
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "127.0.0.1".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config.get_dbname().unwrap_or("postgres");
    let url = format!("postgres://duroxide_no_such_role:hunter2@{host}:{port}/{db}");
    let err = PostgresProvider::connect_with_schema(&url, &schema)
        .await
        .expect_err("no such role");
    assert!(matches!(err, ConnectError::Authentication { .. }), "{err:?}");
    assert_clear(&err, &["duroxide_no_such_role"]);
    assert!(!schema_exists(&client, &schema).await, "nothing was created");
}

#[tokio::test]
async fn a_missing_database_is_named() {
    let config: tokio_postgres::Config = common::url().parse().expect("DUROXIDE_PG_URL parses");
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "127.0.0.1".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().unwrap_or("postgres").to_owned();
    let url = format!("postgres://{user}@{host}:{port}/duroxide_no_such_database");
    let err = PostgresProvider::connect(&url)
        .await
        .expect_err("no such database");
    assert!(matches!(err, ConnectError::Refused { .. }), "{err:?}");
    assert_clear(&err, &["duroxide_no_such_database"]);
}

#[tokio::test]
async fn bad_schema_names_are_refused_and_create_nothing() {
    let client = common::plain_client().await;
    for (schema, reason) in [
        ("my schema", "' '"),
        ("evil\"; DROP SCHEMA public CASCADE; --", "'\"'"),
        ("o'brien", "'\\''"),
        ("1st", "digit"),
        ("", "empty"),
        ("pg_mine", "reserved"),
        (&"x".repeat(64) as &str, "63"),
    ] {
        let err = PostgresProvider::connect_with_schema(&common::url(), schema)
            .await
            .expect_err(schema);
        assert!(
            matches!(err, ConnectError::InvalidSchema { .. }),
            "{schema:?}: {err:?}"
        );
        assert_clear(&err, &["invalid schema name", reason]);
        assert!(!err.is_retryable());
        assert!(!schema_exists(&client, schema).await, "{schema:?} was created");
    }
}

#[tokio::test]
async fn a_schema_from_a_newer_version_is_refused_untouched() {
    let schemas = common::Schemas::default();
    let schema = schemas.fresh();
    let client = common::plain_client().await;

    // A schema migrated by this build, then stamped by a (pretend) newer one.
    drop(common::connect(&schema).await);
    let newer = SCHEMA_VERSION + 1;
    client
        .execute(
            &format!("INSERT INTO \"{schema}\"._duroxide_migrations (version, description) VALUES ($1, 'from the future')"),
            &[&i32::try_from(newer).expect("small")],
        )
        .await
        .expect("stamp a newer version");
    let before = schema_contents(&client, &schema).await;

    let err = PostgresProvider::connect_with_schema(&common::url(), &schema)
        .await
        .expect_err("newer schema");
    match &err {
        ConnectError::SchemaTooNew { found, supported, .. } => {
            assert_eq!((*found, *supported), (newer, SCHEMA_VERSION));
        }
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
    assert_clear(&err, &[&schema, "newer", &format!("version {newer}")]);
    assert!(!err.is_retryable());
    assert_eq!(
        schema_contents(&client, &schema).await,
        before,
        "the schema was changed"
    );
}

#[tokio::test]
async fn a_newer_version_stamp_on_an_empty_schema_gets_no_tables() {
    let schemas = common::Schemas::default();
    let schema = schemas.fresh();
    let client = common::plain_client().await;
    client
        .batch_execute(&format!(
            "CREATE SCHEMA \"{schema}\";
             CREATE TABLE \"{schema}\"._duroxide_migrations (version integer PRIMARY KEY, description text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now());
             INSERT INTO \"{schema}\"._duroxide_migrations VALUES (99, 'future', now());"
        ))
        .await
        .expect("a future-only schema");
    let before = schema_contents(&client, &schema).await;
    let err = PostgresProvider::connect_with_schema(&common::url(), &schema)
        .await
        .expect_err("newer schema");
    assert!(
        matches!(err, ConnectError::SchemaTooNew { found: 99, .. }),
        "{err:?}"
    );
    assert_eq!(
        schema_contents(&client, &schema).await,
        before,
        "migration 1 must not run"
    );
}
