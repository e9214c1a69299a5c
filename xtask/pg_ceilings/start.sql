-- A durable start: the instance and its start message, one statement, waiting for the WAL flush.
\set id random(1, 9000000000000000000)
WITH i AS (INSERT INTO instances (id, name, status) VALUES ('s' || :id, 'Sleep', 'Running') RETURNING id) INSERT INTO queue (instance_id, payload) SELECT id, '{"Start":50}' FROM i;
