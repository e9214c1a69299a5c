//! Reading the connection URL, describing the server in messages (never with the password), opening
//! single connections and building the connection pool.

use std::str::FromStr;
use std::time::Duration;

use deadpool::managed::QueueMode;
use deadpool_postgres::{Hook, HookError, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::config::Host;
use tokio_postgres::{Client, Config, NoTls};

use crate::driver_thread;
use crate::error::{with_causes, ConnectError};
use crate::lock_token::Owner;

/// Applied when the URL sets no `connect_timeout`: an unreachable host fails in bounded time.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an operation waits for a pooled connection before failing as retryable.
const POOL_WAIT: Duration = Duration::from_secs(30);

/// A parsed connection target: the driver configuration and a printable description of it.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) config: Config,
    /// `host:port/database`, for messages.
    pub(crate) description: String,
    /// The role name, for messages.
    pub(crate) user: String,
    /// Run on every new connection: names the provider object's lock-secret owner (see
    /// [`naming_owner`](Self::naming_owner)).
    on_connect: Option<String>,
}

impl Target {
    /// Reads a `postgres://` / `postgresql://` URL or a libpq key=value string. Fills in a connect
    /// timeout and the application name when the URL sets none.
    pub(crate) fn parse(url: &str) -> Result<Target, ConnectError> {
        let trimmed = url.trim();
        if trimmed.is_empty() {
            return Err(ConnectError::InvalidUrl {
                reason: "the URL is empty (expected postgres://user:password@host:port/database)".into(),
            });
        }
        let looks_like_url = trimmed.contains("://");
        if looks_like_url && !(trimmed.starts_with("postgres://") || trimmed.starts_with("postgresql://")) {
            let scheme = trimmed.split("://").next().unwrap_or_default();
            return Err(ConnectError::InvalidUrl {
                reason: format!("unsupported scheme {scheme:?} (expected postgres:// or postgresql://)"),
            });
        }
        // The parser's messages name the offending part, never echo the whole text (which may hold a
        // password).
        let mut config = Config::from_str(trimmed).map_err(|err| ConnectError::InvalidUrl {
            reason: with_causes(&err),
        })?;
        if config.get_hosts().is_empty() && config.get_hostaddrs().is_empty() {
            return Err(ConnectError::InvalidUrl {
                reason: "no host given (expected postgres://user:password@host:port/database)".into(),
            });
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("duroxide");
        }
        let description = describe(&config);
        let user = config.get_user().unwrap_or("(the OS user)").to_owned();
        Ok(Target {
            config,
            description,
            user,
            on_connect: None,
        })
    }

    /// This target with the setting `duroxide.history_owner` on every connection it opens: the prefix
    /// of `owner`'s lock secrets, which lets turns leave out histories that owner's runtime holds
    /// (migration 6). Set by a statement once a connection is open rather than as a startup option,
    /// which connection poolers such as PgBouncer refuse.
    pub(crate) fn naming_owner(&self, owner: &Owner) -> Target {
        Target {
            on_connect: Some(format!("SET duroxide.history_owner = '{}'", owner.text())),
            ..self.clone()
        }
    }

    /// Opens one connection outside the pool, with its driver running on a task of its own on the
    /// driver thread (see `driver_thread`).
    pub(crate) async fn connect_one(&self) -> Result<Client, ConnectError> {
        let config = self.config.clone();
        let client = driver_thread::run(async move {
            let (client, connection) = config.connect(NoTls).await?;
            tokio::spawn(async move {
                if let Err(err) = connection.await {
                    tracing::debug!(target: "duroxide::postgres", %err, "connection closed with an error");
                }
            });
            Ok::<_, tokio_postgres::Error>(client)
        })
        .await
        .map_err(|err| ConnectError::from_connect(&self.description, &self.user, &err))?;
        if let Some(sql) = &self.on_connect {
            client
                .batch_execute(sql)
                .await
                .map_err(|err| ConnectError::from_connect(&self.description, &self.user, &err))?;
        }
        Ok(client)
    }

    /// The pool behind every provider operation. Connections are opened lazily and recycled without a
    /// round trip (a closed connection is noticed and replaced), so taking one costs no query.
    pub(crate) fn pool(&self, max_connections: usize) -> Result<Pool, ConnectError> {
        let manager = Manager::from_config(
            self.config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let connect_timeout = self
            .config
            .get_connect_timeout()
            .copied()
            .unwrap_or(DEFAULT_CONNECT_TIMEOUT);
        let mut builder = Pool::builder(manager);
        if let Some(sql) = self.on_connect.clone() {
            builder = builder.post_create(Hook::async_fn(move |client, _| {
                let sql = sql.clone();
                Box::pin(async move { client.batch_execute(&sql).await.map_err(HookError::Backend) })
            }));
        }
        builder
            .max_size(max_connections.max(1))
            // The most recently used connection first: busy connections stay warm (their prepared
            // statements are reused) and spare ones stay idle instead of being cycled through.
            .queue_mode(QueueMode::Lifo)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(connect_timeout))
            .recycle_timeout(Some(connect_timeout))
            .build()
            .map_err(|err| ConnectError::Refused {
                target: self.description.clone(),
                reason: format!("cannot build the connection pool: {err}"),
                retryable: false,
            })
    }
}

/// `host:port[,host:port]/database`, without credentials.
fn describe(config: &Config) -> String {
    let ports = config.get_ports();
    let port_of = |i: usize| ports.get(i).or(ports.first()).copied().unwrap_or(5432);
    let mut hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| match host {
            Host::Tcp(name) => format!("{name}:{}", port_of(i)),
            #[cfg(unix)]
            Host::Unix(path) => format!("{}:{}", path.display(), port_of(i)),
        })
        .collect();
    if hosts.is_empty() {
        hosts = config
            .get_hostaddrs()
            .iter()
            .enumerate()
            .map(|(i, addr)| format!("{addr}:{}", port_of(i)))
            .collect();
    }
    let database = config
        .get_dbname()
        .or(config.get_user())
        .unwrap_or("(default database)");
    format!("{}/{database}", hosts.join(","))
}

/// The server the crate's own tests use: `DUROXIDE_PG_URL`, by default the local one.
#[cfg(test)]
pub(crate) fn test_target() -> Target {
    let url = std::env::var("DUROXIDE_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    Target::parse(&url).expect("DUROXIDE_PG_URL")
}

/// What a test says when it finds no server at [`test_target`]: how to provide one.
#[cfg(test)]
pub(crate) const NO_TEST_SERVER: &str =
    "this test needs the PostgreSQL server at DUROXIDE_PG_URL (default 127.0.0.1:5432)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn description_leaves_out_the_password() {
        let target = Target::parse("postgres://alice:s3cret@db.example:6543/orders").expect("valid");
        assert_eq!(target.description, "db.example:6543/orders");
        assert_eq!(target.user, "alice");
        assert_eq!(target.config.get_application_name(), Some("duroxide"));
        assert_eq!(
            target.config.get_connect_timeout(),
            Some(&DEFAULT_CONNECT_TIMEOUT)
        );
    }

    #[test]
    fn key_value_strings_are_accepted() {
        let target = Target::parse("host=127.0.0.1 port=5433 user=bob dbname=x").expect("valid");
        assert_eq!(target.description, "127.0.0.1:5433/x");
    }

    #[test]
    fn bad_urls_are_refused_without_echoing_them() {
        for (url, reason) in [
            ("", "empty"),
            ("   ", "empty"),
            ("mysql://root:hunter2@localhost/db", "unsupported scheme"),
            ("postgres://u:hunter2@localhost:notaport/db", "port"),
            ("not a url at all", "invalid"),
            ("postgres:///db", "no host"),
        ] {
            let err = Target::parse(url).expect_err(url);
            let text = err.to_string();
            assert!(
                text.starts_with("Failed to connect to PostgreSQL: invalid connection URL"),
                "{text}"
            );
            assert!(text.contains(reason), "{url:?}: {text}");
            assert!(!text.contains("hunter2"), "the password leaked: {text}");
        }
    }
}
