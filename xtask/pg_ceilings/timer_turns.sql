-- The least an engine does for an orchestration that sleeps on a timer, apart from its durable
-- start: one statement that locks the new instance without waiting for its flush (here it makes the
-- instance's rows itself, since this script has no start to consume), and the durable final turn,
-- which appends the history of both turns and consumes the start. An engine that keeps the instance
-- locked in memory through the 50 ms wait needs no more; one that stores the turn that queues the
-- timer needs a third statement. Run beside start.sql, it is the work a sequential client's starts
-- compete with; pgbench's tps is orchestrations per second.
\set id random(1, 9000000000000000000)
SET synchronous_commit = off;
WITH i AS (INSERT INTO instances (id, name, status) VALUES ('u' || :id, 'Sleep', 'Running') RETURNING id) INSERT INTO queue (instance_id, payload) SELECT id, '{"Start":50}' FROM i;
SET synchronous_commit = on;
WITH l AS (UPDATE instances SET lock_token = NULL, status = 'Completed', output = '"ok"' WHERE id = 'u' || :id RETURNING id), d AS (DELETE FROM queue WHERE instance_id = 'u' || :id RETURNING payload) INSERT INTO history SELECT 'u' || :id, e, 'k', (SELECT max(payload) FROM d) FROM generate_series(1, 4) e;
