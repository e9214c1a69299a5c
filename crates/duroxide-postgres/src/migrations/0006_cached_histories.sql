-- Migration 6: a turn leaves out the history its fetching provider already holds.
--
-- Every query that locks an instance for a turn (fetches, completions that lease the instance)
-- returned the execution's whole history through `turn_state`, so a turn's cost grew with its
-- history: a fan-out of 500 activities read about 30,000 history rows over its ~45 turns. A
-- runtime keeps the engines of the instances it ran (its instance cache), and most turns go to the
-- process that ran the previous one.
--
-- A provider object makes every lock secret start with 8 bytes of its own (its owner prefix) and
-- names that prefix on each of its connections, once it is open, in the setting
-- `duroxide.history_owner` (the first 18 characters of a secret's text form). When the instance's last ack was made under a secret with
-- that prefix, `turn_state` leaves the history out: it returns `event_ids` as a one-element array
-- holding the stored history's length (the highest event id; 0 for none) and `kinds` and `payloads`
-- as NULL. The provider then compares that length with the cache of the runtime that fetches and
-- reads the history itself when they differ. A connection without the setting (a process of an
-- earlier version) gets whole histories as before.
--
-- Only acks change a running execution's history, and each ack records its secret in
-- `last_ack_token`, so the last ack's prefix names the provider object whose runtime saw the stored
-- history last. (Same signature and columns as migration 3's function, so its callers stay.)
CREATE OR REPLACE FUNCTION __schema__.turn_state(p_instance text, p_execution bigint)
RETURNS TABLE (event_ids bigint[], kinds text[], payloads text[], keys text[], vals text[], updated bigint[])
LANGUAGE sql STABLE
AS $$
    SELECT CASE WHEN o.left_out
                THEN ARRAY[coalesce((SELECT e.event_id FROM __schema__.history AS e
                                     WHERE e.instance_id = p_instance AND e.execution_id = p_execution
                                     ORDER BY e.event_id DESC LIMIT 1), 0)]
                ELSE h.event_ids END,
           h.kinds, h.payloads, k.keys, k.vals, k.updated
    FROM (SELECT coalesce(
                     (SELECT left(i.last_ack_token::text, 18) FROM __schema__.instances AS i
                      WHERE i.instance_id = p_instance)
                     = current_setting('duroxide.history_owner', true),
                     false) AS left_out) AS o
    CROSS JOIN LATERAL
         (SELECT array_agg(e.event_id ORDER BY e.event_id) AS event_ids,
                 array_agg(e.kind ORDER BY e.event_id) AS kinds,
                 array_agg(e.payload ORDER BY e.event_id) AS payloads
          FROM __schema__.history AS e
          WHERE e.instance_id = p_instance AND e.execution_id = p_execution AND NOT o.left_out) AS h
    CROSS JOIN
         (SELECT array_agg(s.key ORDER BY s.key) AS keys, array_agg(s.value ORDER BY s.key) AS vals,
                 array_agg(s.updated_at_ms ORDER BY s.key) AS updated
          FROM __schema__.kv_snapshot AS s WHERE s.instance_id = p_instance) AS k
$$;
