-- Migration 1: tables, indexes, and the functions that make each fetch and each ack one round trip.
--
-- `__schema__` stands for the provider's schema name, already quoted. Times are Unix epoch
-- milliseconds on the database clock. Payload columns hold opaque text the provider never parses; every
-- routing decision uses the explicit columns beside them. Tables that every turn updates leave room in
-- their pages (fillfactor) so that those updates stay HOT (no index writes).

-- The database clock, in epoch milliseconds: the start of the client's statement. STABLE, so that one
-- statement (or one function call) sees one "now" and index scans can compare against it; leases and
-- visibility are judged by this one clock whichever host the caller runs on.
CREATE FUNCTION __schema__.now_ms() RETURNS bigint
LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT floor(extract(epoch FROM statement_timestamp()) * 1000)::bigint $$;

-- One row per instance: metadata, custom status, the instance lock (peek-lock with a lease), and the
-- token and fingerprint of the last committed ack, so that an ack repeated after a lost reply is
-- recognised as already done. `locked_until_ms` without a token is an abandon backoff.
CREATE TABLE __schema__.instances (
    instance_id           text    NOT NULL PRIMARY KEY,
    name                  text    NOT NULL,
    version               text,
    current_execution_id  bigint  NOT NULL,
    status                text    NOT NULL,
    output                text,
    created_at_ms         bigint  NOT NULL,
    updated_at_ms         bigint  NOT NULL,
    parent_instance_id    text,
    custom_status         text,
    custom_status_version bigint  NOT NULL DEFAULT 0,
    lock_token            uuid,
    locked_until_ms       bigint,
    last_ack_token        uuid,
    last_ack_digest       bigint
) WITH (fillfactor = 80);
-- Instance trees walk parent links.
CREATE INDEX instances_by_parent ON __schema__.instances (parent_instance_id)
    WHERE parent_instance_id IS NOT NULL;
-- Listing by status and bulk deletes of terminal instances; only status changes touch it.
CREATE INDEX instances_by_status ON __schema__.instances (status);

CREATE TABLE __schema__.executions (
    instance_id     text   NOT NULL,
    execution_id    bigint NOT NULL,
    status          text   NOT NULL,
    output          text,
    started_at_ms   bigint NOT NULL,
    completed_at_ms bigint,
    PRIMARY KEY (instance_id, execution_id)
);

-- The primary key is the read order of a fetch, and what makes a duplicate event id fail the ack.
CREATE TABLE __schema__.history (
    instance_id  text   NOT NULL,
    execution_id bigint NOT NULL,
    event_id     bigint NOT NULL,
    kind         text   NOT NULL,
    payload      text   NOT NULL,
    PRIMARY KEY (instance_id, execution_id, event_id)
);

-- Orchestrator messages; `id` is the enqueue order. A fetch stamps the messages it returns with its
-- lock token, so the ack deletes exactly those and none that arrived during the turn.
CREATE TABLE __schema__.orchestrator_queue (
    id            bigint  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    instance_id   text    NOT NULL,
    payload       text    NOT NULL,
    visible_at_ms bigint  NOT NULL,
    attempt       integer NOT NULL DEFAULT 0,
    lock_token    uuid
) WITH (fillfactor = 80);
-- The claim walks visible messages oldest first.
CREATE INDEX orchestrator_queue_by_visibility ON __schema__.orchestrator_queue (visible_at_ms, id);
-- One instance's messages: the fetch's stamping and the ack's delete.
CREATE INDEX orchestrator_queue_by_instance ON __schema__.orchestrator_queue (instance_id, id);

-- Activities to run; `id` is the enqueue order and, in the lock token, the item's locator.
CREATE TABLE __schema__.worker_queue (
    id              bigint  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    instance_id     text    NOT NULL,
    execution_id    bigint  NOT NULL,
    event_id        bigint  NOT NULL,
    payload         text    NOT NULL,
    session_id      text,
    tag             text,
    visible_at_ms   bigint  NOT NULL,
    attempt         integer NOT NULL DEFAULT 0,
    lock_token      uuid,
    locked_until_ms bigint
) WITH (fillfactor = 80);
-- Cancellation by activity identity, and instance deletes.
CREATE INDEX worker_queue_by_activity ON __schema__.worker_queue (instance_id, execution_id, event_id);
-- Session routing looks up the items of a session.
CREATE INDEX worker_queue_by_session ON __schema__.worker_queue (session_id) WHERE session_id IS NOT NULL;

-- Session ownership: which worker owns a session, and until when.
CREATE TABLE __schema__.sessions (
    session_id      text   NOT NULL PRIMARY KEY,
    owner_id        text   NOT NULL,
    locked_until_ms bigint NOT NULL
);

-- KV as clients see it (the running execution's changes included).
CREATE TABLE __schema__.kv (
    instance_id   text   NOT NULL,
    key           text   NOT NULL,
    value         text   NOT NULL,
    updated_at_ms bigint NOT NULL,
    PRIMARY KEY (instance_id, key)
);

-- KV as it was when the current execution started: what a turn replays against.
CREATE TABLE __schema__.kv_snapshot (
    instance_id   text   NOT NULL,
    key           text   NOT NULL,
    value         text   NOT NULL,
    updated_at_ms bigint NOT NULL,
    PRIMARY KEY (instance_id, key)
);

-- Creates an instance with execution 1 and enqueues its start message, unless the id exists.
CREATE FUNCTION __schema__.create_instance(
    p_instance text, p_name text, p_version text, p_parent text, p_payload text, p_visible_at bigint)
RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    v_now bigint := __schema__.now_ms();
BEGIN
    INSERT INTO __schema__.instances (instance_id, name, version, current_execution_id, status,
                                      created_at_ms, updated_at_ms, parent_instance_id)
    VALUES (p_instance, p_name, p_version, 1, 'Running', v_now, v_now, p_parent)
    ON CONFLICT (instance_id) DO NOTHING;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    INSERT INTO __schema__.executions (instance_id, execution_id, status, started_at_ms)
    VALUES (p_instance, 1, 'Running', v_now);
    INSERT INTO __schema__.orchestrator_queue (instance_id, payload, visible_at_ms)
    VALUES (p_instance, p_payload, coalesce(p_visible_at, v_now));
    RETURN true;
END $$;

-- Enqueues messages produced by an ack, in array order. A message that `creates` its instance creates
-- it (with execution 1) unless it exists, and is dropped if it does (idempotent start; of several for
-- one new id only the first counts). Any other message is stored only if its instance exists (or this
-- call created it): nothing addressed to a missing instance may ever sit in the queue. The existence
-- check takes a key-share lock, so a concurrent delete of that instance cannot leave the message
-- behind as an orphan. Returns whether any message was stored.
CREATE FUNCTION __schema__.enqueue_messages(
    p_now bigint, p_instances text[], p_payloads text[], p_visible_at bigint[], p_creates boolean[],
    p_names text[], p_versions text[], p_parents text[])
RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    v_stored bigint;
BEGIN
    WITH m AS (
        SELECT * FROM unnest(p_instances, p_payloads, p_visible_at, p_creates, p_names, p_versions, p_parents)
            WITH ORDINALITY AS m(instance_id, payload, visible_at, creates, name, version, parent, ord)),
    firsts AS (
        SELECT DISTINCT ON (m.instance_id) m.instance_id, m.name, m.version, m.parent, m.ord
        FROM m WHERE m.creates ORDER BY m.instance_id, m.ord),
    created AS (
        INSERT INTO __schema__.instances (instance_id, name, version, current_execution_id, status,
                                          created_at_ms, updated_at_ms, parent_instance_id)
        SELECT f.instance_id, f.name, f.version, 1, 'Running', p_now, p_now, f.parent FROM firsts AS f
        ON CONFLICT (instance_id) DO NOTHING
        RETURNING instance_id),
    first_executions AS (
        INSERT INTO __schema__.executions (instance_id, execution_id, status, started_at_ms)
        SELECT c.instance_id, 1, 'Running', p_now FROM created AS c),
    stored AS (
        INSERT INTO __schema__.orchestrator_queue (instance_id, payload, visible_at_ms)
        SELECT m.instance_id, m.payload, coalesce(m.visible_at, p_now)
        FROM m
        LEFT JOIN created AS c ON c.instance_id = m.instance_id
        LEFT JOIN firsts AS f ON f.ord = m.ord
        WHERE CASE WHEN m.creates THEN c.instance_id IS NOT NULL AND f.ord IS NOT NULL
                   ELSE c.instance_id IS NOT NULL
                        OR EXISTS (SELECT 1 FROM __schema__.instances AS i
                                   WHERE i.instance_id = m.instance_id FOR KEY SHARE)
              END
        ORDER BY m.ord
        RETURNING 1)
    SELECT count(*) INTO v_stored FROM stored;
    RETURN v_stored > 0;
END $$;

-- Locks the instance whose oldest visible message is the oldest among unlocked instances and returns
-- everything its turn needs in one row. SKIP LOCKED moves on to the next candidate when another fetch
-- holds the first, so concurrent fetchers never wait for each other and never report "no work" while
-- an instance is free. With nothing to fetch, the row carries only `o_now_ms` and `o_next_due_ms`: when
-- something stored becomes fetchable without any new write (a timer, an expiring lease, a backoff).
CREATE FUNCTION __schema__.fetch_orchestration_item(p_secret uuid, p_lock_ms bigint)
RETURNS TABLE (
    o_instance_id text, o_name text, o_version text, o_execution_id bigint, o_status text,
    o_output text, o_created_at_ms bigint, o_updated_at_ms bigint, o_parent_instance_id text,
    o_custom_status text, o_custom_status_version bigint, o_attempt integer, o_messages text[],
    o_event_ids bigint[], o_event_kinds text[], o_event_payloads text[], o_kv_keys text[],
    o_kv_values text[], o_kv_updated_at_ms bigint[], o_now_ms bigint, o_next_due_ms bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_now bigint := __schema__.now_ms();
    v_instance text;
BEGIN
    -- A lock and an attempt count are soft state: a commit lost in a server crash only unlocks the
    -- instance early (its holder's ack then fails with LockLost and the turn is redone). So this
    -- transaction does not wait for its WAL flush; the turn's ack, which does, flushes it anyway.
    PERFORM set_config('synchronous_commit', 'off', true);
    o_now_ms := v_now;
    SELECT i.instance_id INTO v_instance
    FROM __schema__.orchestrator_queue AS q
    JOIN __schema__.instances AS i ON i.instance_id = q.instance_id
    WHERE q.visible_at_ms <= v_now AND (i.locked_until_ms IS NULL OR i.locked_until_ms <= v_now)
    ORDER BY q.visible_at_ms, q.id
    LIMIT 1
    FOR NO KEY UPDATE OF i SKIP LOCKED;

    IF v_instance IS NOT NULL THEN
        UPDATE __schema__.instances SET lock_token = p_secret, locked_until_ms = v_now + p_lock_ms
        WHERE instance_id = v_instance
        RETURNING instance_id, name, version, current_execution_id, status, output, created_at_ms,
                  updated_at_ms, parent_instance_id, custom_status, custom_status_version
        INTO o_instance_id, o_name, o_version, o_execution_id, o_status, o_output, o_created_at_ms,
             o_updated_at_ms, o_parent_instance_id, o_custom_status, o_custom_status_version;

        WITH claimed AS (
            UPDATE __schema__.orchestrator_queue SET attempt = attempt + 1, lock_token = p_secret
            WHERE instance_id = v_instance AND visible_at_ms <= v_now
            RETURNING id, payload, attempt)
        SELECT array_agg(c.payload ORDER BY c.id), max(c.attempt) INTO o_messages, o_attempt
        FROM claimed AS c;

        IF o_messages IS NOT NULL THEN
            SELECT array_agg(h.event_id ORDER BY h.event_id), array_agg(h.kind ORDER BY h.event_id),
                   array_agg(h.payload ORDER BY h.event_id)
            INTO o_event_ids, o_event_kinds, o_event_payloads
            FROM __schema__.history AS h
            WHERE h.instance_id = v_instance AND h.execution_id = o_execution_id;

            SELECT array_agg(k.key ORDER BY k.key), array_agg(k.value ORDER BY k.key),
                   array_agg(k.updated_at_ms ORDER BY k.key)
            INTO o_kv_keys, o_kv_values, o_kv_updated_at_ms
            FROM __schema__.kv_snapshot AS k WHERE k.instance_id = v_instance;
            RETURN NEXT;
            RETURN;
        END IF;
        -- Its messages went between the candidate scan and the claim (a concurrent delete): hand the
        -- lock back and have the caller look again at once.
        UPDATE __schema__.instances SET lock_token = NULL, locked_until_ms = NULL
        WHERE instance_id = v_instance;
        o_instance_id := NULL;
        o_next_due_ms := v_now;
        RETURN NEXT;
        RETURN;
    END IF;

    -- A free candidate that SKIP LOCKED passed over is held for a moment by another transaction (a
    -- fetch that is taking it, an ack about to release it): look again shortly rather than wait.
    IF EXISTS (SELECT 1 FROM __schema__.orchestrator_queue AS q
               JOIN __schema__.instances AS i ON i.instance_id = q.instance_id
               WHERE q.visible_at_ms <= v_now AND (i.locked_until_ms IS NULL OR i.locked_until_ms <= v_now)) THEN
        o_next_due_ms := v_now + 10;
        RETURN NEXT;
        RETURN;
    END IF;
    o_next_due_ms := least(
        (SELECT min(q.visible_at_ms) FROM __schema__.orchestrator_queue AS q WHERE q.visible_at_ms > v_now),
        (SELECT min(i.locked_until_ms)
         FROM __schema__.orchestrator_queue AS q
         JOIN __schema__.instances AS i ON i.instance_id = q.instance_id
         WHERE q.visible_at_ms <= v_now AND i.locked_until_ms > v_now));
    RETURN NEXT;
END $$;

-- Commits one turn. Outcomes: 0 committed; 1 this token's identical ack was already committed (a
-- repeat after a lost reply); 2 the lock is unknown or expired (nothing changed); 3 the ack is for an
-- execution older than the current one (nothing changed). A history event id that already exists
-- raises unique_violation on history_pkey, which rolls the whole call back. `o_orchestrator_work` and
-- `o_worker_work` tell the caller which queues gained fetchable work, so it can wake fetchers.
CREATE FUNCTION __schema__.ack_orchestration_item(
    p_instance text, p_secret uuid, p_digest bigint, p_execution_id bigint,
    p_execution_status text, p_instance_status text, p_output text, p_name text, p_version text,
    p_custom_status_set boolean, p_custom_status text,
    p_event_ids bigint[], p_event_kinds text[], p_event_payloads text[],
    p_kv_set_keys text[], p_kv_set_values text[], p_kv_set_updated_at_ms bigint[], p_kv_delete_keys text[],
    p_work_instances text[], p_work_executions bigint[], p_work_events bigint[], p_work_payloads text[],
    p_work_sessions text[], p_work_tags text[],
    p_msg_instances text[], p_msg_payloads text[], p_msg_visible_at bigint[], p_msg_creates boolean[],
    p_msg_names text[], p_msg_versions text[], p_msg_parents text[],
    p_cancel_instances text[], p_cancel_executions bigint[], p_cancel_events bigint[])
RETURNS TABLE (o_outcome integer, o_current_execution bigint, o_orchestrator_work boolean,
               o_worker_work boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_now bigint := __schema__.now_ms();
    v_current bigint;
    v_token uuid;
    v_until bigint;
    v_last_token uuid;
    v_last_digest bigint;
    v_new_execution boolean;
BEGIN
    o_orchestrator_work := false;
    o_worker_work := false;
    SELECT i.current_execution_id, i.lock_token, i.locked_until_ms, i.last_ack_token, i.last_ack_digest
    INTO v_current, v_token, v_until, v_last_token, v_last_digest
    FROM __schema__.instances AS i WHERE i.instance_id = p_instance
    FOR NO KEY UPDATE;
    o_current_execution := v_current;
    IF v_current IS NULL OR v_token IS DISTINCT FROM p_secret OR v_until <= v_now THEN
        o_outcome := CASE WHEN v_last_token = p_secret AND v_last_digest = p_digest THEN 1 ELSE 2 END;
        RETURN NEXT;
        RETURN;
    END IF;
    IF p_execution_id < v_current THEN
        o_outcome := 3;
        RETURN NEXT;
        RETURN;
    END IF;

    v_new_execution := p_execution_id > v_current;
    IF v_new_execution THEN
        INSERT INTO __schema__.executions (instance_id, execution_id, status, started_at_ms)
        VALUES (p_instance, p_execution_id, 'Running', v_now);
        DELETE FROM __schema__.kv_snapshot WHERE instance_id = p_instance;
        INSERT INTO __schema__.kv_snapshot (instance_id, key, value, updated_at_ms)
        SELECT k.instance_id, k.key, k.value, k.updated_at_ms FROM __schema__.kv AS k
        WHERE k.instance_id = p_instance;
    END IF;

    IF cardinality(p_event_ids) > 0 THEN
        INSERT INTO __schema__.history (instance_id, execution_id, event_id, kind, payload)
        SELECT p_instance, p_execution_id, e.event_id, e.kind, e.payload
        FROM unnest(p_event_ids, p_event_kinds, p_event_payloads) AS e(event_id, kind, payload);
    END IF;

    IF p_execution_status IS NOT NULL OR p_output IS NOT NULL THEN
        UPDATE __schema__.executions SET
            status = coalesce(p_execution_status, status),
            output = coalesce(p_output, output),
            completed_at_ms = CASE WHEN p_execution_status IS NOT NULL AND p_execution_status <> 'Running'
                                   THEN v_now ELSE completed_at_ms END
        WHERE instance_id = p_instance AND execution_id = p_execution_id;
    END IF;

    -- The caller reduced the KV changes to the last one per key, so order no longer matters.
    IF cardinality(p_kv_delete_keys) > 0 THEN
        DELETE FROM __schema__.kv WHERE instance_id = p_instance AND key = ANY (p_kv_delete_keys);
    END IF;
    IF cardinality(p_kv_set_keys) > 0 THEN
        INSERT INTO __schema__.kv (instance_id, key, value, updated_at_ms)
        SELECT p_instance, s.key, s.value, s.updated_at_ms
        FROM unnest(p_kv_set_keys, p_kv_set_values, p_kv_set_updated_at_ms) AS s(key, value, updated_at_ms)
        ON CONFLICT (instance_id, key) DO UPDATE
        SET value = excluded.value, updated_at_ms = excluded.updated_at_ms;
    END IF;

    IF cardinality(p_work_payloads) > 0 THEN
        INSERT INTO __schema__.worker_queue (instance_id, execution_id, event_id, payload, session_id, tag,
                                             visible_at_ms)
        SELECT w.instance_id, w.execution_id, w.event_id, w.payload, w.session_id, w.tag, v_now
        FROM unnest(p_work_instances, p_work_executions, p_work_events, p_work_payloads, p_work_sessions,
                    p_work_tags) WITH ORDINALITY
             AS w(instance_id, execution_id, event_id, payload, session_id, tag, ord)
        ORDER BY w.ord;
        o_worker_work := true;
    END IF;

    IF cardinality(p_msg_payloads) > 0 THEN
        o_orchestrator_work := __schema__.enqueue_messages(v_now, p_msg_instances, p_msg_payloads,
            p_msg_visible_at, p_msg_creates, p_msg_names, p_msg_versions, p_msg_parents);
    END IF;

    IF cardinality(p_cancel_events) > 0 THEN
        DELETE FROM __schema__.worker_queue AS w
        USING unnest(p_cancel_instances, p_cancel_executions, p_cancel_events) AS c(instance_id, execution_id, event_id)
        WHERE w.instance_id = c.instance_id AND w.execution_id = c.execution_id AND w.event_id = c.event_id;
    END IF;

    DELETE FROM __schema__.orchestrator_queue WHERE instance_id = p_instance AND lock_token = p_secret;

    UPDATE __schema__.instances SET
        lock_token = NULL, locked_until_ms = NULL, updated_at_ms = v_now,
        current_execution_id = p_execution_id,
        status = coalesce(p_instance_status, CASE WHEN v_new_execution THEN 'Running' ELSE status END),
        output = CASE WHEN p_output IS NOT NULL THEN p_output WHEN v_new_execution THEN NULL ELSE output END,
        name = coalesce(p_name, name),
        version = coalesce(p_version, version),
        custom_status = CASE WHEN p_custom_status_set THEN p_custom_status ELSE custom_status END,
        custom_status_version = custom_status_version + CASE WHEN p_custom_status_set THEN 1 ELSE 0 END,
        last_ack_token = p_secret,
        last_ack_digest = p_digest
    WHERE instance_id = p_instance;

    -- Messages that arrived during the turn were waiting for this lock's release.
    IF NOT o_orchestrator_work THEN
        o_orchestrator_work := EXISTS (SELECT 1 FROM __schema__.orchestrator_queue AS q
                                       WHERE q.instance_id = p_instance);
    END IF;
    o_outcome := 0;
    o_current_execution := p_execution_id;
    RETURN NEXT;
END $$;

-- Releases an instance lock without consuming its messages. The fetched messages go behind the work
-- already waiting (an instance abandoned again and again cannot starve the others); with a delay the
-- whole instance stays unfetchable until then, which keeps its messages in order.
CREATE FUNCTION __schema__.abandon_orchestration_item(p_instance text, p_secret uuid, p_delay_ms bigint)
RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    v_now bigint := __schema__.now_ms();
    v_visible bigint := v_now + coalesce(p_delay_ms, 0);
BEGIN
    -- Soft state: an abandon lost in a server crash leaves a lock that expires by itself.
    PERFORM set_config('synchronous_commit', 'off', true);
    UPDATE __schema__.instances SET lock_token = NULL,
        locked_until_ms = CASE WHEN p_delay_ms IS NULL THEN NULL ELSE v_visible END
    WHERE instance_id = p_instance AND lock_token = p_secret AND locked_until_ms > v_now;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    UPDATE __schema__.orchestrator_queue SET lock_token = NULL, visible_at_ms = greatest(visible_at_ms, v_visible)
    WHERE instance_id = p_instance AND lock_token = p_secret;
    RETURN true;
END $$;

-- Locks the next activity this worker may run, in enqueue order. Tag filter: untagged items when
-- `p_untagged`, tagged ones when `p_any_tag` or their tag is in `p_tags`. Session items need an owner
-- (`p_owner`): they are taken when the owner holds the session under a live lease (extended), or when
-- the session is free or expired and `p_may_claim` (claimed). The claim re-checks ownership atomically
-- (ON CONFLICT locks the session row), so two workers that raced for one session never both get it;
-- the loser moves on to other candidates. With nothing to fetch, the row carries `o_now_ms` and
-- `o_next_due_ms` only.
CREATE FUNCTION __schema__.fetch_work_item(
    p_secret uuid, p_lock_ms bigint, p_untagged boolean, p_any_tag boolean, p_tags text[],
    p_owner text, p_session_lease_ms bigint, p_may_claim boolean)
RETURNS TABLE (
    o_id bigint, o_instance_id text, o_execution_id bigint, o_event_id bigint, o_payload text,
    o_attempt integer, o_session_id text, o_tag text, o_now_ms bigint, o_next_due_ms bigint)
LANGUAGE plpgsql AS $$
DECLARE
    v_now bigint := __schema__.now_ms();
    v_id bigint;
    v_session text;
    v_taken boolean;
    v_lost_sessions text[] := '{}';
BEGIN
    -- Soft state, as in fetch_orchestration_item: a lease lost in a server crash is taken again.
    PERFORM set_config('synchronous_commit', 'off', true);
    o_now_ms := v_now;
    FOR v_round IN 1..16 LOOP
        v_id := NULL;
        SELECT w.id, w.session_id INTO v_id, v_session
        FROM __schema__.worker_queue AS w
        LEFT JOIN __schema__.sessions AS s ON s.session_id = w.session_id
        WHERE w.visible_at_ms <= v_now
          AND (w.locked_until_ms IS NULL OR w.locked_until_ms <= v_now)
          AND CASE WHEN w.tag IS NULL THEN p_untagged ELSE p_any_tag OR w.tag = ANY (p_tags) END
          AND (w.session_id IS NULL
               OR (p_owner IS NOT NULL
                   AND w.session_id <> ALL (v_lost_sessions)
                   AND ((s.owner_id = p_owner AND s.locked_until_ms > v_now)
                        OR (p_may_claim AND (s.session_id IS NULL OR s.locked_until_ms <= v_now)))))
        ORDER BY w.id
        LIMIT 1
        FOR NO KEY UPDATE OF w SKIP LOCKED;
        EXIT WHEN v_id IS NULL;

        IF v_session IS NOT NULL THEN
            v_taken := NULL;
            IF p_may_claim THEN
                INSERT INTO __schema__.sessions AS s (session_id, owner_id, locked_until_ms)
                VALUES (v_session, p_owner, v_now + p_session_lease_ms)
                ON CONFLICT (session_id) DO UPDATE
                SET owner_id = excluded.owner_id, locked_until_ms = excluded.locked_until_ms
                WHERE s.owner_id = excluded.owner_id OR s.locked_until_ms <= v_now
                RETURNING true INTO v_taken;
            ELSE
                UPDATE __schema__.sessions SET locked_until_ms = v_now + p_session_lease_ms
                WHERE session_id = v_session AND owner_id = p_owner AND locked_until_ms > v_now
                RETURNING true INTO v_taken;
            END IF;
            IF v_taken IS NULL THEN
                -- Another owner took the session meanwhile: skip its items, try the next candidate.
                v_lost_sessions := v_lost_sessions || v_session;
                CONTINUE;
            END IF;
        END IF;

        UPDATE __schema__.worker_queue SET lock_token = p_secret, locked_until_ms = v_now + p_lock_ms,
            attempt = attempt + 1
        WHERE id = v_id
        RETURNING id, instance_id, execution_id, event_id, payload, attempt, session_id, tag
        INTO o_id, o_instance_id, o_execution_id, o_event_id, o_payload, o_attempt, o_session_id, o_tag;
        RETURN NEXT;
        RETURN;
    END LOOP;

    -- An expired session is treated exactly like an absent one, so forgetting it changes nothing but
    -- the table's size.
    DELETE FROM __schema__.sessions WHERE locked_until_ms <= v_now;
    -- As for orchestrations: an eligible item passed over by SKIP LOCKED means look again shortly.
    IF cardinality(v_lost_sessions) > 0 OR EXISTS (
        SELECT 1 FROM __schema__.worker_queue AS w
        LEFT JOIN __schema__.sessions AS s ON s.session_id = w.session_id
        WHERE w.visible_at_ms <= v_now
          AND (w.locked_until_ms IS NULL OR w.locked_until_ms <= v_now)
          AND CASE WHEN w.tag IS NULL THEN p_untagged ELSE p_any_tag OR w.tag = ANY (p_tags) END
          AND (w.session_id IS NULL
               OR (p_owner IS NOT NULL
                   AND ((s.owner_id = p_owner AND s.locked_until_ms > v_now)
                        OR (p_may_claim AND (s.session_id IS NULL OR s.locked_until_ms <= v_now)))))) THEN
        o_next_due_ms := v_now + 10;
        RETURN NEXT;
        RETURN;
    END IF;
    o_next_due_ms := least(
        (SELECT min(w.visible_at_ms) FROM __schema__.worker_queue AS w WHERE w.visible_at_ms > v_now),
        (SELECT min(w.locked_until_ms) FROM __schema__.worker_queue AS w WHERE w.locked_until_ms > v_now),
        (SELECT min(s.locked_until_ms) FROM __schema__.sessions AS s
         WHERE EXISTS (SELECT 1 FROM __schema__.worker_queue AS w WHERE w.session_id = s.session_id)));
    RETURN NEXT;
END $$;

-- Deletes a locked work item and enqueues its completion (if its instance still exists). Outcomes:
-- 0 done, nothing enqueued; 1 done and the completion was enqueued; 2 the lease is unknown, expired or
-- the item was cancelled (nothing changed).
CREATE FUNCTION __schema__.ack_work_item(
    p_id bigint, p_secret uuid, p_instances text[], p_payloads text[], p_visible_at bigint[],
    p_creates boolean[], p_names text[], p_versions text[], p_parents text[])
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_now bigint := __schema__.now_ms();
BEGIN
    DELETE FROM __schema__.worker_queue WHERE id = p_id AND lock_token = p_secret AND locked_until_ms > v_now;
    IF NOT FOUND THEN
        RETURN 2;
    END IF;
    IF cardinality(p_payloads) > 0 AND __schema__.enqueue_messages(v_now, p_instances, p_payloads,
            p_visible_at, p_creates, p_names, p_versions, p_parents) THEN
        RETURN 1;
    END IF;
    RETURN 0;
END $$;
