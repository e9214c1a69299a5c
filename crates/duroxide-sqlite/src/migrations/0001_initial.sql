-- Migration 1: the initial schema.
--
-- Times are Unix epoch milliseconds. Payload columns hold opaque text that the provider never parses;
-- every routing decision uses the explicit columns beside them.

-- One row per instance: metadata, custom status, and the instance lock (peek-lock with a lease).
-- `lock_token` holds the secret part of the token; the token also carries the instance id, so acks
-- find the row by primary key and no index on the secret is written on every fetch and ack.
-- `locked_until_ms` without a token is an abandon backoff: the instance is not fetchable until then.
CREATE TABLE instances (
    instance_id           TEXT    NOT NULL PRIMARY KEY,
    name                  TEXT    NOT NULL,
    version               TEXT,
    current_execution_id  INTEGER NOT NULL,
    status                TEXT    NOT NULL,
    output                TEXT,
    created_at_ms         INTEGER NOT NULL,
    updated_at_ms         INTEGER NOT NULL,
    parent_instance_id    TEXT,
    custom_status         TEXT,
    custom_status_version INTEGER NOT NULL DEFAULT 0,
    lock_token            TEXT,
    locked_until_ms       INTEGER
);
-- Instance trees (sub-orchestrations) walk parent links.
CREATE INDEX instances_by_parent ON instances (parent_instance_id) WHERE parent_instance_id IS NOT NULL;
-- Listing by status and bulk deletes of terminal roots. Not (status, updated_at_ms): every ack
-- changes `updated_at_ms`, and moving an index entry on each turn costs more than the rare bulk delete
-- saves.
CREATE INDEX instances_by_status ON instances (status);

CREATE TABLE executions (
    instance_id     TEXT    NOT NULL,
    execution_id    INTEGER NOT NULL,
    status          TEXT    NOT NULL,
    output          TEXT,
    started_at_ms   INTEGER NOT NULL,
    completed_at_ms INTEGER,
    PRIMARY KEY (instance_id, execution_id)
) WITHOUT ROWID;

-- The primary key is the read order of a turn's fetch (one range scan per instance and execution), and
-- it is what makes a duplicate event id fail the ack.
CREATE TABLE history (
    instance_id  TEXT    NOT NULL,
    execution_id INTEGER NOT NULL,
    event_id     INTEGER NOT NULL,
    kind         TEXT    NOT NULL,
    payload      TEXT    NOT NULL,
    PRIMARY KEY (instance_id, execution_id, event_id)
) WITHOUT ROWID;

-- Orchestrator messages. The rowid is the enqueue order. A message that has not been fetched since it
-- was enqueued or abandoned has no `lock_token`; a fetch stamps the messages it returns with its token so
-- that the ack deletes exactly those.
CREATE TABLE orchestrator_queue (
    id            INTEGER PRIMARY KEY,
    instance_id   TEXT    NOT NULL,
    payload       TEXT    NOT NULL,
    visible_at_ms INTEGER NOT NULL,
    attempt       INTEGER NOT NULL DEFAULT 0,
    lock_token    TEXT
);
-- The fetch walks visible messages oldest first (the rowid breaks ties, so this is enqueue order).
CREATE INDEX orchestrator_queue_by_visibility ON orchestrator_queue (visible_at_ms);
-- One instance's messages in enqueue order: the fetch's claim and the ack's delete.
CREATE INDEX orchestrator_queue_by_instance ON orchestrator_queue (instance_id);

-- Activities to run. The rowid is the enqueue order (and, in the token, the item's locator).
CREATE TABLE worker_queue (
    id              INTEGER PRIMARY KEY,
    instance_id     TEXT    NOT NULL,
    execution_id    INTEGER NOT NULL,
    event_id        INTEGER NOT NULL,
    payload         TEXT    NOT NULL,
    session_id      TEXT,
    tag             TEXT,
    visible_at_ms   INTEGER NOT NULL,
    attempt         INTEGER NOT NULL DEFAULT 0,
    lock_token      TEXT,
    locked_until_ms INTEGER
);
-- Cancellation by activity identity, and instance deletes.
CREATE INDEX worker_queue_by_activity ON worker_queue (instance_id, execution_id, event_id);
-- Fetches for named tags go straight to their items. Partial, so untagged items (the common case)
-- cost no index writes; a default-only fetch walks the queue in enqueue order instead.
CREATE INDEX worker_queue_by_tag ON worker_queue (tag) WHERE tag IS NOT NULL;

-- Session ownership: which worker owns a session, and until when.
CREATE TABLE sessions (
    session_id      TEXT    NOT NULL PRIMARY KEY,
    owner_id        TEXT    NOT NULL,
    locked_until_ms INTEGER NOT NULL
) WITHOUT ROWID;

-- KV as clients see it (the running execution's changes included).
CREATE TABLE kv (
    instance_id   TEXT    NOT NULL,
    key           TEXT    NOT NULL,
    value         TEXT    NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    PRIMARY KEY (instance_id, key)
) WITHOUT ROWID;

-- KV as it was when the current execution started: what a turn replays against.
CREATE TABLE kv_snapshot (
    instance_id   TEXT    NOT NULL,
    key           TEXT    NOT NULL,
    value         TEXT    NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    PRIMARY KEY (instance_id, key)
) WITHOUT ROWID;
