-- One orchestration that sleeps on a timer, as the three transactions it needs at least: a durable
-- start, a turn that appends two events and queues the timer's message, and a durable final turn
-- that consumes it (the wait itself is left out). pgbench's tps is orchestrations per second.
\set id random(1, 9000000000000000000)
WITH i AS (INSERT INTO instances (id, name, status) VALUES ('t' || :id, 'Sleep', 'Running') RETURNING id) INSERT INTO queue (instance_id, payload) SELECT id, '{"Start":50}' FROM i;
WITH s AS (SELECT set_config('synchronous_commit', 'off', true)), l AS (UPDATE instances SET lock_token = NULL, locked_until = (SELECT 1 FROM s) WHERE id = 't' || :id RETURNING id), d AS (DELETE FROM queue WHERE instance_id = 't' || :id RETURNING payload), h AS (INSERT INTO history SELECT 't' || :id, e, 'k', (SELECT max(payload) FROM d) FROM generate_series(1, 2) e) INSERT INTO queue (instance_id, payload) SELECT id, '{"TimerFired":1}' FROM l;
WITH l AS (UPDATE instances SET lock_token = NULL, status = 'Completed', output = '"ok"' WHERE id = 't' || :id RETURNING id), d AS (DELETE FROM queue WHERE instance_id = 't' || :id RETURNING payload) INSERT INTO history SELECT 't' || :id, e, 'k', (SELECT max(payload) FROM d) FROM generate_series(3, 4) e;
