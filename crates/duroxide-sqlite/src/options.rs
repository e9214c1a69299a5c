//! Options for opening a database: how durable a commit is when the call returns.

/// When a committed operation (an acked turn, an enqueued message) is safe from what.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Durability {
    /// WAL with `synchronous = NORMAL`, SQLite's standard setting for WAL. A commit survives a crash of
    /// the process at once, and a power loss or operating-system crash once the next checkpoint has
    /// synced the WAL (the provider checkpoints in the background every 25 to 100 ms while there
    /// are commits). After a power loss the database is always consistent; at worst the last
    /// moments of work are redone, which a durable-execution engine is built to tolerate.
    #[default]
    Normal,
    /// WAL with `synchronous = FULL`: every commit is synced to disk before the call returns. Each
    /// transaction pays for an fsync; the writer's group commit spreads one fsync over all operations
    /// that queued meanwhile.
    Full,
}

impl Durability {
    pub(crate) fn synchronous_pragma(self) -> &'static str {
        match self {
            Durability::Normal => "NORMAL",
            Durability::Full => "FULL",
        }
    }
}

/// How [`SqliteProvider::open_with`](crate::SqliteProvider::open_with) opens a database file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SqliteOptions {
    pub durability: Durability,
}

impl SqliteOptions {
    /// Sets the [`Durability`] of commits.
    pub fn with_durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }
}
