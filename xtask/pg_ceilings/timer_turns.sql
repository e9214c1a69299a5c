-- What the engine does for an orchestration that sleeps on a timer, apart from its durable start:
-- a statement in place of the fetch that locks the new instance (it makes the instance's rows
-- itself, without waiting for its flush, since this script has no start to consume), the turn that
-- queues the timer's message, and the durable final turn that consumes it. Run beside start.sql, it
-- is the work a sequential client's starts compete with; pgbench's tps is orchestrations per second.
\set id random(1, 9000000000000000000)
SET synchronous_commit = off;
WITH i AS (INSERT INTO instances (id, name, status) VALUES ('u' || :id, 'Sleep', 'Running') RETURNING id) INSERT INTO queue (instance_id, payload) SELECT id, '{"Start":50}' FROM i;
WITH l AS (UPDATE instances SET lock_token = NULL, locked_until = 1 WHERE id = 'u' || :id RETURNING id), d AS (DELETE FROM queue WHERE instance_id = 'u' || :id RETURNING payload), h AS (INSERT INTO history SELECT 'u' || :id, e, 'k', (SELECT max(payload) FROM d) FROM generate_series(1, 2) e) INSERT INTO queue (instance_id, payload) SELECT id, '{"TimerFired":1}' FROM l;
SET synchronous_commit = on;
WITH l AS (UPDATE instances SET lock_token = NULL, status = 'Completed', output = '"ok"' WHERE id = 'u' || :id RETURNING id), d AS (DELETE FROM queue WHERE instance_id = 'u' || :id RETURNING payload) INSERT INTO history SELECT 'u' || :id, e, 'k', (SELECT max(payload) FROM d) FROM generate_series(3, 4) e;
