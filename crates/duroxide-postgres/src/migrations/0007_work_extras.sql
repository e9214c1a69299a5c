-- Migration 7: a work fetch that also leases a few queued items for its provider's stock.
--
-- A turn that schedules more activities than there are idle worker fetches (a fan-out) leaves the
-- rest queued, and every worker slot then paid a fetch query of its own after each activity.
-- `fetch_work_items_with_extras` is migration 3's `fetch_work_items` plus up to `p_extra` more items
-- after the `p_max` it takes, which the provider keeps for its next fetches (its stock). Extras are
-- only plain items (untagged, session-less, so any fetch that takes untagged items may run them) and
-- stop at the first queued item that is not plain, so a consumer that takes its stock first still
-- gets items in queue order; they are taken only when the fetch filled all of `p_max`. Rows come
-- back in id order, the `p_max` taken items before the extras. `fetch_work_items` stays, for
-- processes still running the previous version.
CREATE FUNCTION __schema__.fetch_work_items_with_extras(
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

    -- The extras: plain items (untagged, session-less) right after the last item taken, up to the
    -- first item that is not plain, so that a consumer taking them before its next query still
    -- gets items in queue order.
    IF p_extra > 0 AND p_untagged AND cardinality(v_ids) >= p_max THEN
        FOR v_row IN
            SELECT w.id, w.tag, w.session_id
            FROM __schema__.worker_queue AS w
            WHERE w.id > (SELECT max(u.id) FROM unnest(v_ids) AS u(id))
              AND w.visible_at_ms <= v_now
              AND (w.locked_until_ms IS NULL OR w.locked_until_ms <= v_now)
            ORDER BY w.id
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
