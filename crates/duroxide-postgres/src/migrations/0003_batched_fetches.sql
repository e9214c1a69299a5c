-- Migration 3: fetches that lease up to `p_max` items in one call.
--
-- Under load most of a fetch's cost is the statement itself (executor start-up, a round trip, a
-- transaction), not the rows it touches. A provider whose fetches arrive together (several
-- dispatcher slots freed by one group-committed ack) asks once for all of them (`coalesce` in the
-- source). Each function returns one row per leased item and then one summary row, whose item
-- columns are NULL, saying whether more is fetchable (`o_more`) and, when not, when stored work
-- comes due (`o_next_due_ms`), as the single-item functions of migration 2 do. Those stay installed
-- for processes still running the previous version.

-- The history of an instance's execution and its KV snapshot, as arrays in event and key order: what
-- a fetch returns with a locked instance. (A plain SQL function, inlined into the calling query.)
CREATE FUNCTION __schema__.turn_state(p_instance text, p_execution bigint)
RETURNS TABLE (event_ids bigint[], kinds text[], payloads text[], keys text[], vals text[], updated bigint[])
LANGUAGE sql STABLE
AS $$
    SELECT h.event_ids, h.kinds, h.payloads, k.keys, k.vals, k.updated
    FROM (SELECT array_agg(e.event_id ORDER BY e.event_id) AS event_ids,
                 array_agg(e.kind ORDER BY e.event_id) AS kinds,
                 array_agg(e.payload ORDER BY e.event_id) AS payloads
          FROM __schema__.history AS e
          WHERE e.instance_id = p_instance AND e.execution_id = p_execution) AS h,
         (SELECT array_agg(s.key ORDER BY s.key) AS keys, array_agg(s.value ORDER BY s.key) AS vals,
                 array_agg(s.updated_at_ms ORDER BY s.key) AS updated
          FROM __schema__.kv_snapshot AS s WHERE s.instance_id = p_instance) AS k
$$;

-- Up to p_max instances, in the order of their oldest visible message, each with its visible
-- messages, history and KV snapshot.
CREATE FUNCTION __schema__.fetch_orchestration_items(p_secret uuid, p_lock_ms bigint, p_max integer)
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
    v_ids text[];
    v_found bigint := 0;
BEGIN
    -- The candidates are messages, so an instance with several visible messages appears several
    -- times; a window of four messages per wanted instance is taken and reduced to distinct
    -- instances. A window that one busy instance fills yields fewer instances than wanted, and the
    -- summary then says that more is fetchable.
    SELECT array_agg(x.instance_id ORDER BY x.first_at, x.first_id) INTO v_ids
    FROM (SELECT c.instance_id, min(c.visible_at_ms) AS first_at, min(c.id) AS first_id
          FROM (SELECT ci.instance_id, q.visible_at_ms, q.id
                FROM __schema__.orchestrator_queue AS q
                JOIN __schema__.instances AS ci ON ci.instance_id = q.instance_id
                WHERE q.visible_at_ms <= v_now AND (ci.locked_until_ms IS NULL OR ci.locked_until_ms <= v_now)
                ORDER BY q.visible_at_ms, q.id
                LIMIT p_max * 4
                FOR NO KEY UPDATE OF ci SKIP LOCKED) AS c
          GROUP BY c.instance_id
          ORDER BY min(c.visible_at_ms), min(c.id)
          LIMIT p_max) AS x;

    IF v_ids IS NOT NULL THEN
        -- Soft state, as in migration 2: this transaction does not wait for its WAL flush.
        -- Joins with the id list rather than `= ANY (v_ids)`, which a generic plan may answer by
        -- scanning a queue's visibility index and filtering every row.
        UPDATE __schema__.instances AS i SET lock_token = p_secret, locked_until_ms = v_now + p_lock_ms
        FROM unnest(v_ids) AS u(instance_id)
        WHERE i.instance_id = u.instance_id;
        PERFORM set_config('synchronous_commit', 'off', true);

        RETURN QUERY
        -- (`+ 0` keeps the visibility index out of this plan: a generic plan chose it and filtered
        -- every visible message of the queue.)
        WITH claimed AS (
            UPDATE __schema__.orchestrator_queue AS q SET attempt = q.attempt + 1, lock_token = p_secret
            FROM unnest(v_ids) AS u(instance_id)
            WHERE q.instance_id = u.instance_id AND q.visible_at_ms + 0 <= v_now
            RETURNING q.instance_id, q.id, q.payload, q.attempt),
        messages AS (
            SELECT c.instance_id, array_agg(c.payload ORDER BY c.id) AS payloads, max(c.attempt) AS attempt
            FROM claimed AS c GROUP BY c.instance_id)
        SELECT i.instance_id, i.name, i.version, i.current_execution_id, i.status, i.output,
               i.created_at_ms, i.updated_at_ms, i.parent_instance_id, i.custom_status,
               i.custom_status_version, m.attempt, m.payloads, t.event_ids, t.kinds, t.payloads,
               t.keys, t.vals, t.updated, v_now, NULL::bigint, NULL::boolean
        FROM messages AS m
        JOIN __schema__.instances AS i ON i.instance_id = m.instance_id
        CROSS JOIN LATERAL __schema__.turn_state(i.instance_id, i.current_execution_id) AS t
        ORDER BY array_position(v_ids, i.instance_id);
        GET DIAGNOSTICS v_found = ROW_COUNT;

        IF v_found < cardinality(v_ids) THEN
            -- Some instance's messages went between the candidate scan and the claim (a concurrent
            -- delete): hand its lock back.
            UPDATE __schema__.instances AS i SET lock_token = NULL, locked_until_ms = NULL
            FROM unnest(v_ids) AS u(instance_id)
            WHERE i.instance_id = u.instance_id AND i.lock_token = p_secret
              AND NOT EXISTS (SELECT 1 FROM __schema__.orchestrator_queue AS q
                              WHERE q.instance_id = i.instance_id AND q.lock_token = p_secret);
        END IF;
    END IF;

    -- The summary row. Another free candidate (those just locked no longer are); without one, when
    -- stored work comes due: a lock or backoff on a visible message running out, or the next message
    -- becoming visible. Both look from the queue's side, in claim order: planned from the instances'
    -- side (as migration 2's EXISTS was once the tables had statistics), the look stepped through
    -- every instance without visible work, hundreds per fetch as instances accumulate.
    o_now_ms := v_now;
    o_more := coalesce((
        SELECT true FROM __schema__.orchestrator_queue AS q
        JOIN __schema__.instances AS c ON c.instance_id = q.instance_id
        WHERE q.visible_at_ms <= v_now AND (c.locked_until_ms IS NULL OR c.locked_until_ms <= v_now)
        ORDER BY q.visible_at_ms, q.id
        LIMIT 1), false);
    IF NOT o_more THEN
        o_next_due_ms := least(
            (SELECT min((SELECT c.locked_until_ms FROM __schema__.instances AS c
                         WHERE c.instance_id = q.instance_id AND c.locked_until_ms > v_now))
             FROM __schema__.orchestrator_queue AS q WHERE q.visible_at_ms <= v_now),
            (SELECT min(f.visible_at_ms) FROM __schema__.orchestrator_queue AS f
             WHERE f.visible_at_ms > v_now));
    END IF;
    RETURN NEXT;
END $$;

-- Up to p_max work items this fetch may take (tag filter, session routing), in queue order.
CREATE FUNCTION __schema__.fetch_work_items(
    p_secret uuid, p_lock_ms bigint, p_untagged boolean, p_any_tag boolean, p_tags text[],
    p_owner text, p_session_lease_ms bigint, p_may_claim boolean, p_max integer)
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
    v_ids bigint[] := '{}';
    v_sessions text[] := '{}';
    v_lost text[] := '{}';
    v_lost_before integer;
    v_taken boolean;
    v_row record;
BEGIN
    o_now_ms := v_now;
    -- A candidate whose session another owner took meanwhile is passed over; another round then
    -- looks past that session's items, as the single-item fetch did.
    FOR v_round IN 1..16 LOOP
        v_lost_before := cardinality(v_lost);
        FOR v_row IN
            SELECT w.id, w.session_id
            FROM __schema__.worker_queue AS w
            LEFT JOIN __schema__.sessions AS s ON s.session_id = w.session_id
            WHERE w.visible_at_ms <= v_now
              AND (w.locked_until_ms IS NULL OR w.locked_until_ms <= v_now)
              AND w.id <> ALL (v_ids)
              AND CASE WHEN w.tag IS NULL THEN p_untagged ELSE p_any_tag OR w.tag = ANY (p_tags) END
              AND (w.session_id IS NULL
                   OR (p_owner IS NOT NULL
                       AND w.session_id <> ALL (v_lost)
                       AND ((s.owner_id = p_owner AND s.locked_until_ms > v_now)
                            OR (p_may_claim AND (s.session_id IS NULL OR s.locked_until_ms <= v_now)))))
            ORDER BY w.id
            LIMIT p_max - cardinality(v_ids)
            FOR NO KEY UPDATE OF w SKIP LOCKED
        LOOP
            IF v_row.session_id IS NOT NULL AND NOT v_row.session_id = ANY (v_sessions) THEN
                IF v_row.session_id = ANY (v_lost) THEN
                    CONTINUE;
                END IF;
                v_taken := NULL;
                IF p_may_claim THEN
                    INSERT INTO __schema__.sessions AS s (session_id, owner_id, locked_until_ms)
                    VALUES (v_row.session_id, p_owner, v_now + p_session_lease_ms)
                    ON CONFLICT (session_id) DO UPDATE
                    SET owner_id = excluded.owner_id, locked_until_ms = excluded.locked_until_ms
                    WHERE s.owner_id = excluded.owner_id OR s.locked_until_ms <= v_now
                    RETURNING true INTO v_taken;
                ELSE
                    UPDATE __schema__.sessions SET locked_until_ms = v_now + p_session_lease_ms
                    WHERE session_id = v_row.session_id AND owner_id = p_owner AND locked_until_ms > v_now
                    RETURNING true INTO v_taken;
                END IF;
                IF v_taken IS NULL THEN
                    v_lost := v_lost || v_row.session_id;
                    CONTINUE;
                END IF;
                v_sessions := v_sessions || v_row.session_id;
            END IF;
            v_ids := v_ids || v_row.id;
        END LOOP;
        EXIT WHEN cardinality(v_ids) >= p_max OR cardinality(v_lost) = v_lost_before;
    END LOOP;

    IF cardinality(v_ids) > 0 THEN
        -- Soft state, as in migration 2.
        PERFORM set_config('synchronous_commit', 'off', true);
        RETURN QUERY
        WITH leased AS (
            UPDATE __schema__.worker_queue AS w SET lock_token = p_secret, locked_until_ms = v_now + p_lock_ms,
                attempt = w.attempt + 1
            FROM unnest(v_ids) AS u(id)
            WHERE w.id = u.id
            RETURNING w.id, w.instance_id, w.execution_id, w.event_id, w.payload, w.attempt, w.session_id, w.tag)
        SELECT l.id, l.instance_id, l.execution_id, l.event_id, l.payload, l.attempt, l.session_id, l.tag,
               v_now, NULL::bigint, NULL::boolean
        FROM leased AS l;
    END IF;

    -- The summary row, as in fetch_work_item of migration 2: more fetchable (a session lost to another
    -- owner counts: look again shortly), or when something comes due; expired sessions are forgotten
    -- on the way.
    o_more := cardinality(v_lost) > 0 OR coalesce((
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
    IF NOT o_more THEN
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
    END IF;
    RETURN NEXT;
END $$;

-- An ack that hands the work items it creates to fetches waiting in the acking process: as
-- `ack_orchestration_item`, plus the items in the `p_lease_*` arrays stored already leased under
-- `p_lease_secret` (their ids returned in order), so that the waiting fetches need no query of their
-- own. Only when the turn commits (outcome 0); a repeat of a committed ack leases nothing.
CREATE FUNCTION __schema__.ack_orchestration_item_leasing(
    p_instance text, p_secret uuid, p_digest bigint, p_execution_id bigint,
    p_execution_status text, p_instance_status text, p_output text, p_name text, p_version text,
    p_custom_status_set boolean, p_custom_status text,
    p_event_ids bigint[], p_event_kinds text[], p_event_payloads text[],
    p_kv_set_keys text[], p_kv_set_values text[], p_kv_set_updated_at_ms bigint[], p_kv_delete_keys text[],
    p_work_instances text[], p_work_executions bigint[], p_work_events bigint[], p_work_payloads text[],
    p_work_sessions text[], p_work_tags text[],
    p_msg_instances text[], p_msg_payloads text[], p_msg_visible_at bigint[], p_msg_creates boolean[],
    p_msg_names text[], p_msg_versions text[], p_msg_parents text[],
    p_cancel_instances text[], p_cancel_executions bigint[], p_cancel_events bigint[],
    p_lease_secret uuid, p_lease_ms bigint, p_lease_instances text[], p_lease_executions bigint[],
    p_lease_events bigint[], p_lease_payloads text[])
RETURNS TABLE (o_outcome integer, o_current_execution bigint, o_orchestrator_items integer,
               o_worker_items integer, o_leased_ids bigint[])
LANGUAGE plpgsql
SET jit = off SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    v_now bigint := __schema__.now_ms();
BEGIN
    SELECT a.o_outcome, a.o_current_execution, a.o_orchestrator_items, a.o_worker_items
    INTO o_outcome, o_current_execution, o_orchestrator_items, o_worker_items
    FROM __schema__.ack_orchestration_item(p_instance, p_secret, p_digest, p_execution_id,
        p_execution_status, p_instance_status, p_output, p_name, p_version, p_custom_status_set,
        p_custom_status, p_event_ids, p_event_kinds, p_event_payloads, p_kv_set_keys, p_kv_set_values,
        p_kv_set_updated_at_ms, p_kv_delete_keys, p_work_instances, p_work_executions, p_work_events,
        p_work_payloads, p_work_sessions, p_work_tags, p_msg_instances, p_msg_payloads,
        p_msg_visible_at, p_msg_creates, p_msg_names, p_msg_versions, p_msg_parents,
        p_cancel_instances, p_cancel_executions, p_cancel_events) AS a;
    IF o_outcome = 0 AND cardinality(p_lease_payloads) > 0 THEN
        -- Identity values follow the insertion order, which is the arrays' order.
        WITH leased AS (
            INSERT INTO __schema__.worker_queue (instance_id, execution_id, event_id, payload, visible_at_ms,
                                                 lock_token, locked_until_ms, attempt)
            SELECT l.instance_id, l.execution_id, l.event_id, l.payload, v_now,
                   p_lease_secret, v_now + p_lease_ms, 1
            FROM unnest(p_lease_instances, p_lease_executions, p_lease_events, p_lease_payloads)
                 WITH ORDINALITY AS l(instance_id, execution_id, event_id, payload, ord)
            ORDER BY l.ord
            RETURNING id)
        SELECT array_agg(leased.id ORDER BY leased.id) INTO o_leased_ids FROM leased;
    END IF;
    RETURN NEXT;
END $$;

-- An activity's ack that hands the instance its completion goes to to a fetch waiting in the acking
-- process: as `ack_work_item`, and when the completion was stored (outcome 1) and no turn of the
-- instance runs, the instance is locked under `p_lease_secret` and returned with its visible
-- messages, history and KV snapshot, as a fetch returns it. One row; the item columns are NULL when
-- nothing was leased. The lock commits with the ack, durably.
CREATE FUNCTION __schema__.ack_work_item_leasing(
    p_id bigint, p_secret uuid, p_instances text[], p_payloads text[], p_visible_at bigint[],
    p_creates boolean[], p_names text[], p_versions text[], p_parents text[],
    p_lease_secret uuid, p_lease_ms bigint)
RETURNS TABLE (
    o_instance_id text, o_name text, o_version text, o_execution_id bigint, o_status text,
    o_output text, o_created_at_ms bigint, o_updated_at_ms bigint, o_parent_instance_id text,
    o_custom_status text, o_custom_status_version bigint, o_attempt integer, o_messages text[],
    o_event_ids bigint[], o_event_kinds text[], o_event_payloads text[], o_kv_keys text[],
    o_kv_values text[], o_kv_updated_at_ms bigint[], o_outcome integer)
LANGUAGE plpgsql
SET jit = off SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    v_now bigint := __schema__.now_ms();
    v_leased text;
BEGIN
    o_outcome := __schema__.ack_work_item(p_id, p_secret, p_instances, p_payloads, p_visible_at,
        p_creates, p_names, p_versions, p_parents);
    IF o_outcome = 1 AND cardinality(p_instances) = 1 THEN
        UPDATE __schema__.instances AS i SET lock_token = p_lease_secret, locked_until_ms = v_now + p_lease_ms
        WHERE i.instance_id = (
            SELECT c.instance_id FROM __schema__.instances AS c
            WHERE c.instance_id = p_instances[1] AND (c.locked_until_ms IS NULL OR c.locked_until_ms <= v_now)
            FOR NO KEY UPDATE SKIP LOCKED)
        RETURNING i.instance_id INTO v_leased;
    END IF;
    IF v_leased IS NULL THEN
        RETURN NEXT;
        RETURN;
    END IF;
    RETURN QUERY
    WITH claimed AS (
        UPDATE __schema__.orchestrator_queue AS q SET attempt = q.attempt + 1, lock_token = p_lease_secret
        WHERE q.instance_id = v_leased AND q.visible_at_ms + 0 <= v_now
        RETURNING q.id, q.payload, q.attempt)
    SELECT i.instance_id, i.name, i.version, i.current_execution_id, i.status, i.output,
           i.created_at_ms, i.updated_at_ms, i.parent_instance_id, i.custom_status,
           i.custom_status_version,
           (SELECT max(c.attempt) FROM claimed AS c),
           (SELECT array_agg(c.payload ORDER BY c.id) FROM claimed AS c),
           t.event_ids, t.kinds, t.payloads, t.keys, t.vals, t.updated, o_outcome
    FROM __schema__.instances AS i
    CROSS JOIN LATERAL __schema__.turn_state(i.instance_id, i.current_execution_id) AS t
    WHERE i.instance_id = v_leased;
END $$;
