-- Migration 5: several activities' plain completions in one call.
--
-- A group-committed batch (see `batch` in the source) carried one `complete_work_item` call per
-- completion. Most of such a call's server time is the call itself and each statement's executor
-- start-up, not the rows (pg_stat_statements: 0.19 to 0.23 ms per call in a fan-out, of which the
-- statements' own work is about half). A batch now sends all of its completions as one call of
-- `complete_work_items`, whose statements each handle every completion.
--
-- Each position of the arrays is one completion, with the arguments and outcomes of
-- `complete_work_item` (migration 4), and every returned row says which position it answers
-- (`o_position`, 1-based). When several completions of one instance ask to lock it, the first
-- position does, and its turn brings all of their messages. `complete_work_item` stays, for
-- completions committed alone and for processes still running the previous version.
CREATE FUNCTION __schema__.complete_work_items(
    p_ids bigint[], p_secrets uuid[], p_instances text[], p_payloads text[], p_lease_secrets uuid[],
    p_lease_ms bigint[])
RETURNS TABLE (
    o_instance_id text, o_name text, o_version text, o_execution_id bigint, o_status text,
    o_output text, o_created_at_ms bigint, o_updated_at_ms bigint, o_parent_instance_id text,
    o_custom_status text, o_custom_status_version bigint, o_attempt integer, o_messages text[],
    o_event_ids bigint[], o_event_kinds text[], o_event_payloads text[], o_kv_keys text[],
    o_kv_values text[], o_kv_updated_at_ms bigint[], o_outcome integer, o_position integer)
LANGUAGE plpgsql
SET jit = off SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off
AS $$
DECLARE
    v_now bigint := __schema__.now_ms();
    -- Positions whose work item was still leased to their ack (deleted here).
    v_done integer[];
    -- Instances that exist, among those of `v_done` (their messages are stored).
    v_existing text[];
    -- Instances locked here, with the position that asked and its secret.
    v_locked text[];
    v_locked_positions integer[];
    v_locked_secrets uuid[];
BEGIN
    WITH deleted AS (
        DELETE FROM __schema__.worker_queue AS w
        USING unnest(p_ids, p_secrets) WITH ORDINALITY AS u(id, secret, position)
        WHERE w.id = u.id AND w.lock_token = u.secret AND w.locked_until_ms > v_now
        RETURNING u.position)
    SELECT coalesce(array_agg(d.position::integer), '{}') INTO v_done FROM deleted AS d;

    IF cardinality(v_done) > 0 THEN
        -- The key-share locks keep a delete of the instances from passing the stores below.
        SELECT coalesce(array_agg(x.instance_id), '{}') INTO v_existing
        FROM (SELECT i.instance_id FROM __schema__.instances AS i
              WHERE i.instance_id IN (SELECT p_instances[d] FROM unnest(v_done) AS d)
              FOR KEY SHARE) AS x;

        -- Each free instance asked for is locked for the first position that asked.
        WITH askers AS (
            SELECT DISTINCT ON (p_instances[d]) p_instances[d] AS instance_id, d AS position,
                   p_lease_secrets[d] AS secret, p_lease_ms[d] AS lease_ms
            FROM unnest(v_done) AS d
            WHERE p_lease_secrets[d] IS NOT NULL
            ORDER BY p_instances[d], d),
        free AS (
            SELECT c.instance_id FROM __schema__.instances AS c
            WHERE c.instance_id IN (SELECT a.instance_id FROM askers AS a)
              AND (c.locked_until_ms IS NULL OR c.locked_until_ms <= v_now)
            FOR NO KEY UPDATE SKIP LOCKED),
        locked AS (
            UPDATE __schema__.instances AS i
            SET lock_token = a.secret, locked_until_ms = v_now + a.lease_ms
            FROM askers AS a
            WHERE i.instance_id = a.instance_id AND i.instance_id IN (SELECT f.instance_id FROM free AS f)
            RETURNING i.instance_id, a.position, a.secret)
        SELECT array_agg(l.instance_id), array_agg(l.position), array_agg(l.secret)
        INTO v_locked, v_locked_positions, v_locked_secrets
        FROM locked AS l;

        -- The messages, in position order (their ids keep it).
        INSERT INTO __schema__.orchestrator_queue (instance_id, payload, visible_at_ms)
        SELECT p_instances[d], p_payloads[d], v_now
        FROM unnest(v_done) AS d
        WHERE p_instances[d] = ANY (v_existing)
        ORDER BY d;
    END IF;

    IF v_locked IS NOT NULL THEN
        -- Each locked instance's turn, as a fetch would return it.
        RETURN QUERY
        WITH claimed AS (
            UPDATE __schema__.orchestrator_queue AS q SET attempt = q.attempt + 1, lock_token = l.secret
            FROM unnest(v_locked, v_locked_secrets) AS l(instance_id, secret)
            WHERE q.instance_id = l.instance_id AND q.visible_at_ms + 0 <= v_now
            RETURNING q.instance_id, q.id, q.payload, q.attempt),
        messages AS (
            SELECT c.instance_id, array_agg(c.payload ORDER BY c.id) AS payloads, max(c.attempt) AS attempt
            FROM claimed AS c GROUP BY c.instance_id)
        SELECT i.instance_id, i.name, i.version, i.current_execution_id, i.status, i.output,
               i.created_at_ms, i.updated_at_ms, i.parent_instance_id, i.custom_status,
               i.custom_status_version, m.attempt, m.payloads, t.event_ids, t.kinds, t.payloads,
               t.keys, t.vals, t.updated, 1, l.position
        FROM unnest(v_locked, v_locked_positions) AS l(instance_id, position)
        JOIN messages AS m ON m.instance_id = l.instance_id
        JOIN __schema__.instances AS i ON i.instance_id = l.instance_id
        CROSS JOIN LATERAL __schema__.turn_state(i.instance_id, i.current_execution_id) AS t;
    END IF;

    -- Every other position: stored (1), its instance gone (0), or its lease lost (2).
    RETURN QUERY
    SELECT NULL::text, NULL::text, NULL::text, NULL::bigint, NULL::text, NULL::text, NULL::bigint,
           NULL::bigint, NULL::text, NULL::text, NULL::bigint, NULL::integer, NULL::text[],
           NULL::bigint[], NULL::text[], NULL::text[], NULL::text[], NULL::text[], NULL::bigint[],
           CASE WHEN NOT (u.position::integer = ANY (v_done)) THEN 2
                WHEN u.instance_id = ANY (v_existing) THEN 1
                ELSE 0 END,
           u.position::integer
    FROM unnest(p_instances) WITH ORDINALITY AS u(instance_id, position)
    WHERE NOT (u.position::integer = ANY (coalesce(v_locked_positions, '{}')));
END $$;
