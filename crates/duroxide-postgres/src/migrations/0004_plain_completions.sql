-- Migration 4: flat functions for the two acks of the hot path (a turn's, an activity's plain
-- completion), a create that can lock the new instance for its creator's runtime, and hand-backs
-- that do not count as attempts.
--
-- Nearly every activity ack stores one completion for an existing instance. Through
-- `ack_work_item_leasing` that took two nested function calls (`ack_work_item`, `enqueue_messages`,
-- each with its own settings to apply and restore) and the general enqueue statement, which also
-- handles instance creation, several messages and delays. Here: delete the item, lock the instance
-- when asked to and free, store the message, and with the lock return the turn as a fetch would.
--
-- A provider that leased an item to a fetch of its own that then went away hands the item back at
-- once. That is not a failed attempt: the attempt the lease counted is taken back, so that hand-backs
-- never bring an instance or an activity closer to its poison limit.

-- Outcome: 0 the instance is gone (nothing stored), 1 stored, 2 the work item's lease was lost
-- (nothing changed). With `p_lease_secret`, also locks the instance for `p_lease_ms` when no turn of it
-- runs and returns it with its messages, history and KV snapshot (`o_instance_id` NULL otherwise).
CREATE FUNCTION __schema__.complete_work_item(
    p_id bigint, p_secret uuid, p_instance text, p_payload text, p_lease_secret uuid, p_lease_ms bigint)
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
BEGIN
    DELETE FROM __schema__.worker_queue WHERE id = p_id AND lock_token = p_secret AND locked_until_ms > v_now;
    IF NOT FOUND THEN
        o_outcome := 2;
        RETURN NEXT;
        RETURN;
    END IF;
    IF p_lease_secret IS NOT NULL THEN
        UPDATE __schema__.instances AS i SET lock_token = p_lease_secret, locked_until_ms = v_now + p_lease_ms
        WHERE i.instance_id = (
            SELECT c.instance_id FROM __schema__.instances AS c
            WHERE c.instance_id = p_instance AND (c.locked_until_ms IS NULL OR c.locked_until_ms <= v_now)
            FOR NO KEY UPDATE SKIP LOCKED);
        IF FOUND THEN
            -- The instance row is locked by this transaction, so it exists.
            INSERT INTO __schema__.orchestrator_queue (instance_id, payload, visible_at_ms)
            VALUES (p_instance, p_payload, v_now);
            RETURN QUERY
            WITH claimed AS (
                UPDATE __schema__.orchestrator_queue AS q SET attempt = q.attempt + 1, lock_token = p_lease_secret
                WHERE q.instance_id = p_instance AND q.visible_at_ms + 0 <= v_now
                RETURNING q.id, q.payload, q.attempt)
            SELECT i.instance_id, i.name, i.version, i.current_execution_id, i.status, i.output,
                   i.created_at_ms, i.updated_at_ms, i.parent_instance_id, i.custom_status,
                   i.custom_status_version,
                   (SELECT max(c.attempt) FROM claimed AS c),
                   (SELECT array_agg(c.payload ORDER BY c.id) FROM claimed AS c),
                   t.event_ids, t.kinds, t.payloads, t.keys, t.vals, t.updated, 1
            FROM __schema__.instances AS i
            CROSS JOIN LATERAL __schema__.turn_state(i.instance_id, i.current_execution_id) AS t
            WHERE i.instance_id = p_instance;
            RETURN;
        END IF;
    END IF;
    -- Stored only for an existing instance; the key-share lock keeps a delete from passing it.
    INSERT INTO __schema__.orchestrator_queue (instance_id, payload, visible_at_ms)
    SELECT p_instance, p_payload, v_now
    WHERE EXISTS (SELECT 1 FROM __schema__.instances AS i WHERE i.instance_id = p_instance FOR KEY SHARE);
    o_outcome := CASE WHEN FOUND THEN 1 ELSE 0 END;
    RETURN NEXT;
END $$;

-- Creates an instance as `create_instance` does, visible at once and locked with `p_lease_secret` for
-- `p_lease_ms`: a client sharing its provider with a runtime hands the first turn to that runtime
-- without a fetch. Returns the instance as a fetch would (no history, no KV yet), or a row of NULLs
-- when the instance already existed (nothing changed).
CREATE FUNCTION __schema__.create_instance_leasing(
    p_instance text, p_name text, p_version text, p_parent text, p_payload text,
    p_lease_secret uuid, p_lease_ms bigint)
RETURNS TABLE (
    o_instance_id text, o_name text, o_version text, o_execution_id bigint, o_status text,
    o_output text, o_created_at_ms bigint, o_updated_at_ms bigint, o_parent_instance_id text,
    o_custom_status text, o_custom_status_version bigint, o_attempt integer, o_messages text[],
    o_event_ids bigint[], o_event_kinds text[], o_event_payloads text[], o_kv_keys text[],
    o_kv_values text[], o_kv_updated_at_ms bigint[])
LANGUAGE plpgsql
SET jit = off SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    v_now bigint := __schema__.now_ms();
BEGIN
    INSERT INTO __schema__.instances AS i (instance_id, name, version, current_execution_id, status,
                                           created_at_ms, updated_at_ms, parent_instance_id,
                                           lock_token, locked_until_ms)
    VALUES (p_instance, p_name, p_version, 1, 'Running', v_now, v_now, p_parent,
            p_lease_secret, v_now + p_lease_ms)
    ON CONFLICT (instance_id) DO NOTHING
    RETURNING i.instance_id, i.name, i.version, i.current_execution_id, i.status, i.output,
              i.created_at_ms, i.updated_at_ms, i.parent_instance_id, i.custom_status,
              i.custom_status_version
    INTO o_instance_id, o_name, o_version, o_execution_id, o_status, o_output, o_created_at_ms,
         o_updated_at_ms, o_parent_instance_id, o_custom_status, o_custom_status_version;
    IF NOT FOUND THEN
        RETURN NEXT;
        RETURN;
    END IF;
    INSERT INTO __schema__.executions (instance_id, execution_id, status, started_at_ms)
    VALUES (p_instance, 1, 'Running', v_now);
    -- Claimed as it is stored: one attempt, this lock.
    INSERT INTO __schema__.orchestrator_queue (instance_id, payload, visible_at_ms, lock_token, attempt)
    VALUES (p_instance, p_payload, v_now, p_lease_secret, 1);
    o_attempt := 1;
    o_messages := ARRAY[p_payload];
    RETURN NEXT;
END $$;

-- Hands back an instance locked for a fetch that went away: as an abandon without delay, and the
-- attempt its messages' claim counted is taken back. False when the lock is no longer held.
CREATE FUNCTION __schema__.release_orchestration_item(p_instance text, p_secret uuid)
RETURNS boolean
LANGUAGE plpgsql
SET jit = off SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    v_now bigint := __schema__.now_ms();
BEGIN
    -- Soft state, as for an abandon: a hand-back lost in a crash leaves a lock that expires.
    PERFORM set_config('synchronous_commit', 'off', true);
    UPDATE __schema__.instances SET lock_token = NULL, locked_until_ms = NULL
    WHERE instance_id = p_instance AND lock_token = p_secret AND locked_until_ms > v_now;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    UPDATE __schema__.orchestrator_queue SET lock_token = NULL, attempt = greatest(attempt - 1, 0)
    WHERE instance_id = p_instance AND lock_token = p_secret;
    RETURN true;
END $$;

-- Commits one turn, and leases the work items listed in `p_lease_*` as it stores them: what
-- `ack_orchestration_item_leasing` did by calling `ack_orchestration_item` and then inserting, in one
-- function body (a nested call applied and restored its settings and started another executor),
-- and used for every turn, leasing or not. Outcomes and checks are those of `ack_orchestration_item`
-- (migration 2); `o_leased_ids` are the leased items' row ids in the arrays' order.
CREATE FUNCTION __schema__.ack_turn(
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

    -- Work items leased to this provider's idle fetches as they are stored (see `handoff` in the
    -- source); identity values follow the insertion order, which is the arrays' order.
    IF cardinality(p_lease_payloads) > 0 THEN
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
