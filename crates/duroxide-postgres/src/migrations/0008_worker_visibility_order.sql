-- Migration 8: work fetches walk the worker queue in visibility order, through an index.
--
-- Migration 7's fetch walked the queue in id order and its summary took the minimum over every
-- row, so each fetch read every item that was not fetchable: a worker queue of items backing off
-- (an activity name no worker knows, during a rolling deploy, backs off for up to 30 s per
-- attempt) cost each fetch about 0.4 µs per such item, 8.7 ms with 20,000 of them, and those
-- fetches come at every item's due time. Items are now taken in the order they became visible
-- (then by id), the order of `worker_queue_by_visibility`, so a fetch reads only visible items,
-- and the next due time comes from the index's first delayed item. For items that never waited
-- this is enqueue order, as before; an item that waited out a delay now goes after the items
-- that were visible before it came back. Same signature and rows as migration 7's function, so
-- its callers stay.
CREATE INDEX worker_queue_by_visibility ON __schema__.worker_queue (visible_at_ms, id);

CREATE OR REPLACE FUNCTION __schema__.fetch_work_items_with_extras(
    p_secret uuid, p_lock_ms bigint, p_untagged boolean, p_any_tag boolean, p_tags text[],
    p_owner text, p_session_lease_ms bigint, p_may_claim boolean, p_max integer, p_extra integer)
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
    v_extra bigint[] := '{}';
    v_last_visible bigint;
    v_last_id bigint;
    v_taken boolean;
    v_row record;
BEGIN
    o_now_ms := v_now;
    -- A candidate whose session another owner took meanwhile is passed over; another round then
    -- looks past that session's items, as the single-item fetch did.
    FOR v_round IN 1..16 LOOP
        v_lost_before := cardinality(v_lost);
        FOR v_row IN
            SELECT w.id, w.session_id, w.visible_at_ms
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
            ORDER BY w.visible_at_ms, w.id
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
            -- The last item taken in queue order, where the extras start.
            IF v_last_id IS NULL OR (v_row.visible_at_ms, v_row.id) > (v_last_visible, v_last_id) THEN
                v_last_visible := v_row.visible_at_ms;
                v_last_id := v_row.id;
            END IF;
        END LOOP;
        EXIT WHEN cardinality(v_ids) >= p_max OR cardinality(v_lost) = v_lost_before;
    END LOOP;

    -- The extras: plain items (untagged, session-less) right after the last item taken, up to the
    -- first item that is not plain, so that a consumer taking them before its next query still
    -- gets items in queue order.
    IF p_extra > 0 AND p_untagged AND cardinality(v_ids) >= p_max THEN
        FOR v_row IN
            SELECT w.id, w.tag, w.session_id
            FROM __schema__.worker_queue AS w
            WHERE (w.visible_at_ms, w.id) > (v_last_visible, v_last_id)
              AND w.visible_at_ms <= v_now
              AND (w.locked_until_ms IS NULL OR w.locked_until_ms <= v_now)
            ORDER BY w.visible_at_ms, w.id
            LIMIT p_extra
        LOOP
            EXIT WHEN v_row.tag IS NOT NULL OR v_row.session_id IS NOT NULL;
            v_extra := v_extra || v_row.id;
        END LOOP;
        IF cardinality(v_extra) > 0 THEN
            SELECT coalesce(array_agg(x.id), '{}') INTO v_extra
            FROM (SELECT w.id FROM __schema__.worker_queue AS w
                  WHERE w.id = ANY (v_extra)
                    AND (w.locked_until_ms IS NULL OR w.locked_until_ms <= v_now)
                  FOR NO KEY UPDATE OF w SKIP LOCKED) AS x;
            v_ids := v_ids || v_extra;
        END IF;
    END IF;

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
        FROM leased AS l
        ORDER BY l.id = ANY (v_extra), l.id;
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
        ORDER BY w.visible_at_ms, w.id
        LIMIT 1), false);
    IF NOT o_more THEN
        -- As migration 7's: the earliest of an item becoming visible, a lease on a visible item
        -- running out, and another owner's session lock on a visible item running out; the first
        -- from the visibility index (the earliest delayed item the request admits), the others
        -- among the visible items only.
        WITH expired AS (
            DELETE FROM __schema__.sessions WHERE locked_until_ms <= v_now)
        SELECT least(
            (SELECT w.visible_at_ms FROM __schema__.worker_queue AS w
             WHERE w.visible_at_ms > v_now
               AND CASE WHEN w.tag IS NULL THEN p_untagged ELSE p_any_tag OR w.tag = ANY (p_tags) END
               AND (w.session_id IS NULL OR p_owner IS NOT NULL)
             ORDER BY w.visible_at_ms, w.id
             LIMIT 1),
            (SELECT min(CASE WHEN w.locked_until_ms > v_now THEN w.locked_until_ms
                             WHEN s.owner_id <> p_owner AND s.locked_until_ms > v_now THEN s.locked_until_ms
                        END)
             FROM __schema__.worker_queue AS w
             LEFT JOIN __schema__.sessions AS s ON s.session_id = w.session_id
             WHERE w.visible_at_ms <= v_now
               AND CASE WHEN w.tag IS NULL THEN p_untagged ELSE p_any_tag OR w.tag = ANY (p_tags) END
               AND (w.session_id IS NULL OR p_owner IS NOT NULL)))
        INTO o_next_due_ms;
    END IF;
    RETURN NEXT;
END $$;
