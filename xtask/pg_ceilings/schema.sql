-- The least a PostgreSQL-backed engine stores for an orchestration: an instance row, its queued
-- messages, its history and its queued activities, each reached by key (no claims, no scans).
CREATE TABLE instances (id text PRIMARY KEY, name text NOT NULL, status text NOT NULL,
                        lock_token uuid, locked_until bigint, output text) WITH (fillfactor = 80);
CREATE TABLE queue (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, instance_id text NOT NULL,
                    payload text NOT NULL) WITH (fillfactor = 80);
CREATE INDEX ON queue (instance_id);
CREATE TABLE history (instance_id text, event_id int, kind text, payload text,
                      PRIMARY KEY (instance_id, event_id));
CREATE TABLE worker (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, instance_id text NOT NULL,
                     payload text NOT NULL) WITH (fillfactor = 80);
