-- Migration 2: cheaper fetches and acks, and acks that say how much work they made fetchable.
--
-- * Fetches take fewer statements: the claim is one UPDATE around the SKIP LOCKED candidate
--   subquery, and the turn's messages, history and KV snapshot are read by one more.
-- * The fetch functions plan without sequential scans, sorts, hash or merge joins. A queue table is
--   small in live rows but churns: between vacuums it holds many dead rows, and with statistics from a
--   moment when it held few rows the planner chose a sequential scan and a sort for the worker claim,
--   which read every dead row on every fetch; and it answered "is another instance fetchable?" with
--   a merge join over the whole instances index (hundreds of pages with thousands of instances). An
--   index scan in claim order with index lookups per row skips dead rows (once marked dead, index
--   entries are passed over cheaply) and stops at the first free one.
-- * No JIT in these functions: a cost estimate inflated by a disabled plan type (or by a large table)
--   crossed `jit_above_cost` and each call compiled its statements, ~130 ms instead of ~0.1 ms.
-- * `enqueue_messages` returns how many messages it stored, and `ack_orchestration_item` how many
--   items each queue gained, so that a provider wakes as many waiting fetches as there is work for
--   instead of all of them. Fetches say whether more is fetchable and, when nothing is, when it comes
--   due, also when they found something.
-- * The queue tables are vacuumed by the provider while it deletes from them (see `maintenance` in
--   the source); these settings let autovacuum help and keep vacuum from truncating them, which takes
--   an exclusive lock that stalls every fetch and ack for a moment.

ALTER TABLE __schema__.orchestrator_queue SET (vacuum_truncate = false,
    autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000, autovacuum_vacuum_cost_delay = 0);
ALTER TABLE __schema__.worker_queue SET (vacuum_truncate = false,
    autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000, autovacuum_vacuum_cost_delay = 0);

DROP FUNCTION __schema__.ack_work_item(bigint, uuid, text[], text[], bigint[], boolean[], text[], text[], text[]);
DROP FUNCTION __schema__.ack_orchestration_item(
    text, uuid, bigint, bigint, text, text, text, text, text, boolean, text, bigint[], text[], text[], text[],
    text[], bigint[], text[], text[], bigint[], bigint[], text[], text[], text[], text[], text[], bigint[],
    boolean[], text[], text[], text[], text[], bigint[], bigint[]);
DROP FUNCTION __schema__.enqueue_messages(bigint, text[], text[], bigint[], boolean[], text[], text[], text[]);
DROP FUNCTION __schema__.fetch_orchestration_item(uuid, bigint);
DROP FUNCTION __schema__.fetch_work_item(uuid, bigint, boolean, boolean, text[], text, bigint, boolean);

-- As in migration 1, returning how many messages were stored.
CREATE FUNCTION __schema__.enqueue_messages(
    p_now bigint, p_instances text[], p_payloads text[], p_visible_at bigint[], p_creates boolean[],
    p_names text[], p_versions text[], p_parents text[])
RETURNS integer
LANGUAGE plpgsql
SET jit = off SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    v_stored integer;
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
    RETURN v_stored;
END $$;

-- As in migration 1, in fewer statements, and telling the caller whether another instance is
-- fetchable right now (`o_more`) and, when none is, when stored work comes due (`o_next_due_ms`),
-- also when it found one: a provider that knows the queue drained wakes no other fetch for it, and one
-- that knows there is more wakes one.
CREATE FUNCTION __schema__.fetch_orchestration_item(p_secret uuid, p_lock_ms bigint)
RETURNS TABLE (
    o_instance_id text, o_name text, o_version text, o_execution_id bigint, o_status text,
    o_output text, o_created_at_ms bigint, o_updated_at_ms bigint, o_parent_instance_id text,
    o_custom_status text, o_custom_status_version bigint, o_attempt integer, o_messages text[],
    o_event_ids bigint[], o_event_kinds text[], o_event_payloads text[], o_kv_keys text[],
    o_kv_values text[], o_kv_updated_at_ms bigint[], o_now_ms bigint, o_next_due_ms bigint,
    o_more boolean)
LANGUAGE plpgsql
SET enable_seqscan = off SET enable_sort = off SET enable_hashjoin = off SET enable_mergejoin = off
SET jit = off SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    v_now bigint := __schema__.now_ms();
    v_soft text;
BEGIN
    o_now_ms := v_now;
    -- The instance whose oldest visible message is the oldest among unlocked instances. A lock and an
    -- attempt count are soft state: a commit lost in a server crash only unlocks the instance early
    -- (its holder's ack then fails with LockLost and the turn is redone). So this transaction does not
    -- wait for its WAL flush; the turn's ack, which does, flushes it anyway.
    UPDATE __schema__.instances AS i SET lock_token = p_secret, locked_until_ms = v_now + p_lock_ms
    WHERE i.instance_id = (
        SELECT c.instance_id
        FROM __schema__.orchestrator_queue AS q
        JOIN __schema__.instances AS c ON c.instance_id = q.instance_id
        WHERE q.visible_at_ms <= v_now AND (c.locked_until_ms IS NULL OR c.locked_until_ms <= v_now)
        ORDER BY q.visible_at_ms, q.id
        LIMIT 1
        FOR NO KEY UPDATE OF c SKIP LOCKED)
    RETURNING i.instance_id, i.name, i.version, i.current_execution_id, i.status, i.output,
              i.created_at_ms, i.updated_at_ms, i.parent_instance_id, i.custom_status,
              i.custom_status_version, set_config('synchronous_commit', 'off', true)
    INTO o_instance_id, o_name, o_version, o_execution_id, o_status, o_output, o_created_at_ms,
         o_updated_at_ms, o_parent_instance_id, o_custom_status, o_custom_status_version, v_soft;

    IF o_instance_id IS NOT NULL THEN
        WITH claimed AS (
            UPDATE __schema__.orchestrator_queue SET attempt = attempt + 1, lock_token = p_secret
            WHERE instance_id = o_instance_id AND visible_at_ms <= v_now
            RETURNING id, payload, attempt)
        SELECT (SELECT array_agg(c.payload ORDER BY c.id) FROM claimed AS c),
               (SELECT max(c.attempt) FROM claimed AS c),
               h.event_ids, h.kinds, h.payloads, k.keys, k.vals, k.updated
        INTO o_messages, o_attempt, o_event_ids, o_event_kinds, o_event_payloads, o_kv_keys, o_kv_values,
             o_kv_updated_at_ms
        FROM (SELECT array_agg(h.event_id ORDER BY h.event_id) AS event_ids,
                     array_agg(h.kind ORDER BY h.event_id) AS kinds,
                     array_agg(h.payload ORDER BY h.event_id) AS payloads
              FROM __schema__.history AS h
              WHERE h.instance_id = o_instance_id AND h.execution_id = o_execution_id) AS h,
             (SELECT array_agg(k.key ORDER BY k.key) AS keys, array_agg(k.value ORDER BY k.key) AS vals,
                     array_agg(k.updated_at_ms ORDER BY k.key) AS updated
              FROM __schema__.kv_snapshot AS k WHERE k.instance_id = o_instance_id) AS k;
        IF o_messages IS NULL THEN
            -- Its messages went between the candidate scan and the claim (a concurrent delete): hand
            -- the lock back and have the caller look again at once.
            UPDATE __schema__.instances SET lock_token = NULL, locked_until_ms = NULL
            WHERE instance_id = o_instance_id;
            o_instance_id := NULL;
            o_next_due_ms := v_now;
            RETURN NEXT;
            RETURN;
        END IF;
    END IF;

    -- Another free candidate (the one just locked no longer is). Without an instance, one means that
    -- SKIP LOCKED passed it over while another transaction held it for a moment (a fetch taking it, an
    -- ack releasing it): look again shortly rather than wait.
    o_more := EXISTS (
        SELECT 1 FROM __schema__.orchestrator_queue AS q
        JOIN __schema__.instances AS c ON c.instance_id = q.instance_id
        WHERE q.visible_at_ms <= v_now AND (c.locked_until_ms IS NULL OR c.locked_until_ms <= v_now));
    IF o_more THEN
        IF o_instance_id IS NULL THEN
            o_next_due_ms := v_now + 10;
        END IF;
    ELSE
        -- Stored work comes due when a lock or backoff on a visible message runs out, or when the
        -- next message becomes visible.
        SELECT least(min(c.locked_until_ms),
                     (SELECT min(f.visible_at_ms) FROM __schema__.orchestrator_queue AS f
                      WHERE f.visible_at_ms > v_now))
        INTO o_next_due_ms
        FROM __schema__.orchestrator_queue AS q
        JOIN __schema__.instances AS c ON c.instance_id = q.instance_id
        WHERE q.visible_at_ms <= v_now AND c.locked_until_ms > v_now;
    END IF;
    RETURN NEXT;
END $$;

-- As in migration 1; returns how many messages the ack stored (and one more when messages that
-- arrived during the turn wait for the released instance), and how many work items it stored.
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
RETURNS TABLE (o_outcome integer, o_current_execution bigint, o_orchestrator_items integer,
               o_worker_items integer)
LANGUAGE plpgsql
SET jit = off SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    v_now bigint := __schema__.now_ms();
    v_current bigint;
    v_token uuid;
    v_until bigint;
    v_last_token uuid;
    v_last_digest bigint;
    v_new_execution boolean;
    v_waiting boolean;
BEGIN
    o_orchestrator_items := 0;
    o_worker_items := 0;
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
        o_worker_items := cardinality(p_work_payloads);
    END IF;

    IF cardinality(p_msg_payloads) > 0 THEN
        o_orchestrator_items := __schema__.enqueue_messages(v_now, p_msg_instances, p_msg_payloads,
            p_msg_visible_at, p_msg_creates, p_msg_names, p_msg_versions, p_msg_parents);
    END IF;

    IF cardinality(p_cancel_events) > 0 THEN
        DELETE FROM __schema__.worker_queue AS w
        USING unnest(p_cancel_instances, p_cancel_executions, p_cancel_events) AS c(instance_id, execution_id, event_id)
        WHERE w.instance_id = c.instance_id AND w.execution_id = c.execution_id AND w.event_id = c.event_id;
    END IF;

    -- The consumed messages go; messages that arrived during the turn (or that this ack sent to the
    -- instance itself) were waiting for this lock's release. One statement: the outer query still
    -- sees the rows its CTE deletes, so it leaves out this lock's own.
    WITH consumed AS (
        DELETE FROM __schema__.orchestrator_queue WHERE instance_id = p_instance AND lock_token = p_secret)
    SELECT EXISTS (SELECT 1 FROM __schema__.orchestrator_queue AS q
                   WHERE q.instance_id = p_instance AND q.lock_token IS DISTINCT FROM p_secret)
    INTO v_waiting;

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

    IF v_waiting THEN
        o_orchestrator_items := o_orchestrator_items + 1;
    END IF;
    o_outcome := 0;
    o_current_execution := p_execution_id;
    RETURN NEXT;
END $$;

-- As in migration 1, telling the caller whether another item is fetchable right now (`o_more`) and,
-- when none is, when one comes due (`o_next_due_ms`), as fetch_orchestration_item does.
CREATE FUNCTION __schema__.fetch_work_item(
    p_secret uuid, p_lock_ms bigint, p_untagged boolean, p_any_tag boolean, p_tags text[],
    p_owner text, p_session_lease_ms bigint, p_may_claim boolean)
RETURNS TABLE (
    o_id bigint, o_instance_id text, o_execution_id bigint, o_event_id bigint, o_payload text,
    o_attempt integer, o_session_id text, o_tag text, o_now_ms bigint, o_next_due_ms bigint,
    o_more boolean)
LANGUAGE plpgsql
SET enable_seqscan = off SET enable_sort = off SET enable_hashjoin = off SET enable_mergejoin = off
SET jit = off SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    v_now bigint := __schema__.now_ms();
    v_id bigint;
    v_session text;
    v_taken boolean;
    v_lost_sessions text[] := '{}';
    v_soft text;
BEGIN
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

        -- Soft state, as in fetch_orchestration_item: a lease lost in a server crash is taken again.
        UPDATE __schema__.worker_queue SET lock_token = p_secret, locked_until_ms = v_now + p_lock_ms,
            attempt = attempt + 1
        WHERE id = v_id
        RETURNING id, instance_id, execution_id, event_id, payload, attempt, session_id, tag,
                  set_config('synchronous_commit', 'off', true)
        INTO o_id, o_instance_id, o_execution_id, o_event_id, o_payload, o_attempt, o_session_id, o_tag,
             v_soft;
        EXIT;
    END LOOP;

    -- Another item this fetch may take (the one just leased no longer is). Without an item, one means
    -- that SKIP LOCKED passed it over while another transaction held it for a moment, as does a
    -- session lost to another owner: look again shortly. (A subquery in claim order rather than
    -- EXISTS, which the planner would answer with a sequential scan over every dead row.)
    o_more := cardinality(v_lost_sessions) > 0 OR coalesce((
        SELECT true FROM __schema__.worker_queue AS w
        LEFT JOIN __schema__.sessions AS s ON s.session_id = w.session_id
        WHERE w.visible_at_ms <= v_now
          AND (w.locked_until_ms IS NULL OR w.locked_until_ms <= v_now)
          AND CASE WHEN w.tag IS NULL THEN p_untagged ELSE p_any_tag OR w.tag = ANY (p_tags) END
          AND (w.session_id IS NULL
               OR (p_owner IS NOT NULL
                   AND ((s.owner_id = p_owner AND s.locked_until_ms > v_now)
                        OR (p_may_claim AND (s.session_id IS NULL OR s.locked_until_ms <= v_now)))))
        ORDER BY w.id
        LIMIT 1), false);
    IF o_more THEN
        IF o_id IS NULL THEN
            o_next_due_ms := v_now + 10;
        END IF;
        RETURN NEXT;
        RETURN;
    END IF;

    -- Nothing else fetchable: when does an item this fetch may take come due (visible, its lease run
    -- out, its session's owner gone)? Expired sessions are forgotten on the way; an expired session is
    -- treated exactly like an absent one, so that changes nothing but the table's size.
    WITH expired AS (
        DELETE FROM __schema__.sessions WHERE locked_until_ms <= v_now)
    SELECT min(CASE WHEN w.visible_at_ms > v_now THEN w.visible_at_ms
                    WHEN w.locked_until_ms > v_now THEN w.locked_until_ms
                    WHEN s.owner_id <> p_owner AND s.locked_until_ms > v_now THEN s.locked_until_ms
               END)
    INTO o_next_due_ms
    FROM __schema__.worker_queue AS w
    LEFT JOIN __schema__.sessions AS s ON s.session_id = w.session_id
    WHERE CASE WHEN w.tag IS NULL THEN p_untagged ELSE p_any_tag OR w.tag = ANY (p_tags) END
      AND (w.session_id IS NULL OR p_owner IS NOT NULL);
    RETURN NEXT;
END $$;

-- As in migration 1, for enqueue_messages' count.
CREATE FUNCTION __schema__.ack_work_item(
    p_id bigint, p_secret uuid, p_instances text[], p_payloads text[], p_visible_at bigint[],
    p_creates boolean[], p_names text[], p_versions text[], p_parents text[])
RETURNS integer
LANGUAGE plpgsql
SET jit = off SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    v_now bigint := __schema__.now_ms();
BEGIN
    DELETE FROM __schema__.worker_queue WHERE id = p_id AND lock_token = p_secret AND locked_until_ms > v_now;
    IF NOT FOUND THEN
        RETURN 2;
    END IF;
    IF cardinality(p_payloads) > 0 AND __schema__.enqueue_messages(v_now, p_instances, p_payloads,
            p_visible_at, p_creates, p_names, p_versions, p_parents) > 0 THEN
        RETURN 1;
    END IF;
    RETURN 0;
END $$;
