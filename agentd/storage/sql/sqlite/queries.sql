-- The embedded backend's own queries (see ../queries.sql for the shared ones). One writer
-- runs every transaction, so the lock_* queries only read: nothing else can write meanwhile.

-- name: lock_assistant
SELECT * FROM assistants WHERE assistant_id = :assistant_id;

-- name: lock_thread
SELECT metadata, status FROM threads WHERE thread_id = :thread_id;

-- name: lock_threads
-- One JSON parameter, not one per id: SQLite caps a statement's parameters.
SELECT thread_id FROM threads WHERE thread_id IN (SELECT value FROM json_each(:ids));

-- name: lock_cron
SELECT * FROM crons WHERE cron_id = :cron_id;

-- name: copy_thread
INSERT INTO threads (thread_id, created_at, updated_at, state_updated_at, metadata, status,
                     rest_status, config, "values", interrupts, error)
SELECT :new_thread_id, :now, :now, state_updated_at, metadata, rest_status, rest_status, config,
       "values", interrupts, error
FROM threads WHERE thread_id = :thread_id
RETURNING *;

-- name: copy_thread_ttl
INSERT INTO thread_ttl (thread_id, strategy, ttl_minutes)
SELECT :new_thread_id, strategy, ttl_minutes FROM thread_ttl WHERE thread_id = :thread_id
ON CONFLICT (thread_id) DO UPDATE
SET strategy = excluded.strategy, ttl_minutes = excluded.ttl_minutes, swept_at = NULL;

-- name: expired_threads
-- Threads past their TTL (since their last write) with no run in flight, not swept since.
SELECT t.thread_id, x.strategy, t.updated_at
FROM thread_ttl x JOIN threads t USING (thread_id)
WHERE julianday(t.updated_at) + x.ttl_minutes / 1440.0 <= julianday(:now)
  AND (x.swept_at IS NULL OR x.swept_at < t.updated_at)
  AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.thread_id = t.thread_id
                  AND r.status IN ('pending', 'running'))
LIMIT :limit;

-- name: claim_thread
-- The thread of the oldest due pending run among threads with nothing running.
SELECT r.thread_id FROM runs r
WHERE r.status = 'pending' AND r.created_at <= :now
  AND NOT EXISTS (SELECT 1 FROM runs x WHERE x.thread_id = r.thread_id AND x.status = 'running')
ORDER BY r.created_at LIMIT 1;

-- name: claim_webhooks
-- Lease due deliveries: their due time moves past the lease.
UPDATE webhook_outbox SET attempt = attempt + 1, next_attempt_at = :until, locked_until = :until
WHERE delivery_id IN (SELECT delivery_id FROM webhook_outbox
                      WHERE next_attempt_at <= :now ORDER BY next_attempt_at LIMIT :limit)
RETURNING delivery_id, run_id, url, payload, attempt;

-- name: delete_run_events_chunk
DELETE FROM run_events WHERE rowid IN (
    SELECT rowid FROM run_events WHERE run_id = :run_id LIMIT :limit);

-- name: last_event_key
-- Inserted in id order, so the newest row has the highest id.
SELECT ms, seq FROM run_events ORDER BY rowid DESC LIMIT 1;

-- ---------------------------------------------------------------- LangGraph's tables
-- Those of AsyncSqliteSaver (langgraph-checkpoint-sqlite): `checkpoints` (metadata as JSON
-- in a BLOB) and `writes`, in the same file, changed in agentd's transactions.

-- name: delete_thread_checkpoints
DELETE FROM checkpoints WHERE thread_id = :thread_id;
DELETE FROM writes WHERE thread_id = :thread_id;

-- name: copy_thread_checkpoints
INSERT INTO checkpoints (thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, type,
                         checkpoint, metadata)
SELECT :new_thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, type, checkpoint,
       metadata
FROM checkpoints WHERE thread_id = :thread_id;
INSERT INTO writes (thread_id, checkpoint_ns, checkpoint_id, task_id, task_path, idx, channel,
                    type, value)
SELECT :new_thread_id, checkpoint_ns, checkpoint_id, task_id, task_path, idx, channel, type,
       value
FROM writes WHERE thread_id = :thread_id;

-- name: latest_checkpoint_run_id
SELECT json_extract(CAST(metadata AS TEXT), '$.run_id') AS run_id FROM checkpoints
WHERE thread_id = :thread_id AND checkpoint_ns = ''
ORDER BY checkpoint_id DESC LIMIT 1;

-- name: checkpoint_uses_delta_channel
-- DeltaChannel's markers in checkpoint metadata (as LangGraph's own savers check).
SELECT 1 AS found FROM checkpoints WHERE thread_id = :thread_id AND (
    json_type(CAST(metadata AS TEXT), '$.counters_since_delta_snapshot') IS NOT NULL
    OR json_type(CAST(metadata AS TEXT), '$.delta_writes_versioned') IS NOT NULL)
LIMIT 1;

-- name: checkpoint_heads
SELECT checkpoint_ns, max(checkpoint_id) AS checkpoint_id FROM checkpoints
WHERE thread_id = :thread_id GROUP BY checkpoint_ns;

-- name: checkpoint_root_parent
-- The root checkpoint a subgraph's checkpoint belongs to.
SELECT json_extract(CAST(metadata AS TEXT), '$.parents.""') AS parent FROM checkpoints
WHERE thread_id = :thread_id AND checkpoint_ns = :checkpoint_ns
  AND checkpoint_id = :checkpoint_id;

-- name: checkpoint_keep_only
-- All of a namespace but one checkpoint (none when :checkpoint_id is NULL), its parent cut.
DELETE FROM writes WHERE thread_id = :thread_id AND checkpoint_ns = :checkpoint_ns
    AND checkpoint_id IS NOT :checkpoint_id;
DELETE FROM checkpoints WHERE thread_id = :thread_id AND checkpoint_ns = :checkpoint_ns
    AND checkpoint_id IS NOT :checkpoint_id;
UPDATE checkpoints SET parent_checkpoint_id = NULL
WHERE thread_id = :thread_id AND checkpoint_ns = :checkpoint_ns;

-- name: checkpoint_drop_unused
-- Nothing: channel values live in the checkpoint rows themselves.

-- name: checkpoint_delete_run
-- The checkpoints a run created, with their writes.
DELETE FROM writes WHERE thread_id = :thread_id AND checkpoint_id IN (
    SELECT checkpoint_id FROM checkpoints WHERE thread_id = :thread_id
    AND json_extract(CAST(metadata AS TEXT), '$.run_id') = :run_id);
DELETE FROM checkpoints WHERE thread_id = :thread_id
    AND json_extract(CAST(metadata AS TEXT), '$.run_id') = :run_id;

-- name: checkpoint_writes_of
SELECT task_id, idx FROM writes
WHERE thread_id = :thread_id AND checkpoint_ns = :checkpoint_ns
  AND checkpoint_id = :checkpoint_id;

-- name: checkpoint_delete_write
DELETE FROM writes WHERE thread_id = :thread_id AND checkpoint_ns = :checkpoint_ns
    AND checkpoint_id = :checkpoint_id AND task_id = :task_id AND idx = :idx;

-- name: hold_run
-- The fence of a run's checkpoint writes, in their transaction (SQLite has one writer).
SELECT 1 AS held FROM runs WHERE run_id = :run_id AND status = 'running' AND attempt = :attempt;

-- name: lock_expired_run
SELECT run_id FROM runs WHERE run_id = :run_id;

-- name: bounded_lock_wait
-- Nothing to do: the one writer never waits on a row lock.

-- name: lock_thread_unless_busy
SELECT metadata, status FROM threads WHERE thread_id = :thread_id;
