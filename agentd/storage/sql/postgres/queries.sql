-- The PostgreSQL backend's own queries (see ../queries.sql for the shared ones). Transactions
-- run side by side here: a transaction that decides from a thread's runs first locks the
-- thread's row (lock_thread), and claims skip threads another transaction holds.

-- name: lock_assistant
SELECT * FROM assistants WHERE assistant_id = :assistant_id FOR UPDATE;

-- name: lock_thread
SELECT metadata, status FROM threads WHERE thread_id = :thread_id FOR UPDATE;

-- name: lock_threads
-- In id order: two transactions locking the same threads cannot deadlock.
SELECT thread_id FROM threads WHERE thread_id = ANY(:ids::text[]) ORDER BY thread_id FOR UPDATE;

-- name: lock_cron
SELECT * FROM crons WHERE cron_id = :cron_id FOR UPDATE;

-- name: copy_thread
INSERT INTO threads (thread_id, created_at, updated_at, state_updated_at, metadata, status,
                     rest_status, config, "values", interrupts, error)
SELECT :new_thread_id::text, :now::timestamptz, :now::timestamptz, state_updated_at, metadata,
       rest_status, rest_status, config, "values", interrupts, error
FROM threads WHERE thread_id = :thread_id
RETURNING *;

-- name: copy_thread_ttl
INSERT INTO thread_ttl (thread_id, strategy, ttl_minutes)
SELECT :new_thread_id::text, strategy, ttl_minutes FROM thread_ttl WHERE thread_id = :thread_id
ON CONFLICT (thread_id) DO UPDATE
SET strategy = excluded.strategy, ttl_minutes = excluded.ttl_minutes, swept_at = NULL;

-- name: expired_threads
-- Threads past their TTL (since their last write) with no run in flight, not swept since;
-- locked, so that a run created meanwhile waits for the sweep (or the sweep skips the thread).
SELECT t.thread_id, x.strategy, t.updated_at
FROM thread_ttl x JOIN threads t USING (thread_id)
WHERE t.updated_at + x.ttl_minutes * interval '1 minute' <= :now::timestamptz
  AND (x.swept_at IS NULL OR x.swept_at < t.updated_at)
  AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.thread_id = t.thread_id
                  AND r.status IN ('pending', 'running'))
LIMIT :limit
FOR UPDATE OF t SKIP LOCKED;

-- name: claim_thread
-- The thread of the oldest due pending run among threads with nothing running, locked, skipping
-- threads another transaction holds (a claim, a cancel, a run's end, a hand-back). What this
-- statement saw may be stale by the time it has the lock: claim_thread_run, a statement of its
-- own (with a snapshot taken under the lock), decides.
SELECT r.thread_id FROM runs r JOIN threads t ON t.thread_id = r.thread_id
WHERE r.status = 'pending' AND r.created_at <= :now::timestamptz
  AND NOT EXISTS (SELECT 1 FROM runs x WHERE x.thread_id = r.thread_id AND x.status = 'running')
ORDER BY r.created_at LIMIT 1
FOR UPDATE OF t SKIP LOCKED;

-- name: claim_webhooks
-- Lease due deliveries (their due time moves past the lease), skipping those being leased.
UPDATE webhook_outbox SET attempt = attempt + 1, next_attempt_at = :until, locked_until = :until
WHERE next_attempt_at <= :now AND delivery_id IN (
    SELECT delivery_id FROM webhook_outbox WHERE next_attempt_at <= :now::timestamptz
    ORDER BY next_attempt_at LIMIT :limit FOR UPDATE SKIP LOCKED)
RETURNING delivery_id, run_id, url, payload, attempt;

-- name: delete_run_events_chunk
DELETE FROM run_events WHERE row_order IN (
    SELECT row_order FROM run_events WHERE run_id = :run_id LIMIT :limit);

-- name: last_event_key
SELECT ms, seq FROM run_events ORDER BY row_order DESC LIMIT 1;

-- ---------------------------------------------------------------- LangGraph's tables
-- Those of AsyncPostgresSaver (langgraph-checkpoint-postgres): `checkpoints` (the checkpoint
-- and its metadata as jsonb), `checkpoint_blobs` (channel values by channel and version) and
-- `checkpoint_writes`, changed in agentd's transactions.

-- name: delete_thread_checkpoints
DELETE FROM checkpoints WHERE thread_id = :thread_id;
DELETE FROM checkpoint_blobs WHERE thread_id = :thread_id;
DELETE FROM checkpoint_writes WHERE thread_id = :thread_id;

-- name: copy_thread_checkpoints
INSERT INTO checkpoints (thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, type,
                         checkpoint, metadata)
SELECT :new_thread_id::text, checkpoint_ns, checkpoint_id, parent_checkpoint_id, type,
       checkpoint, metadata
FROM checkpoints WHERE thread_id = :thread_id;
INSERT INTO checkpoint_blobs (thread_id, checkpoint_ns, channel, version, type, blob)
SELECT :new_thread_id::text, checkpoint_ns, channel, version, type, blob
FROM checkpoint_blobs WHERE thread_id = :thread_id;
INSERT INTO checkpoint_writes (thread_id, checkpoint_ns, checkpoint_id, task_id, task_path, idx,
                               channel, type, blob)
SELECT :new_thread_id::text, checkpoint_ns, checkpoint_id, task_id, task_path, idx, channel,
       type, blob
FROM checkpoint_writes WHERE thread_id = :thread_id;

-- name: latest_checkpoint_run_id
SELECT metadata ->> 'run_id' AS run_id FROM checkpoints
WHERE thread_id = :thread_id AND checkpoint_ns = ''
ORDER BY checkpoint_id DESC LIMIT 1;

-- name: checkpoint_uses_delta_channel
-- DeltaChannel's markers in checkpoint metadata (as LangGraph's own savers check).
SELECT 1 AS found FROM checkpoints WHERE thread_id = :thread_id
  AND (metadata ? 'counters_since_delta_snapshot' OR metadata ? 'delta_writes_versioned')
LIMIT 1;

-- name: checkpoint_heads
SELECT checkpoint_ns, max(checkpoint_id) AS checkpoint_id FROM checkpoints
WHERE thread_id = :thread_id GROUP BY checkpoint_ns;

-- name: checkpoint_root_parent
-- The root checkpoint a subgraph's checkpoint belongs to.
SELECT metadata -> 'parents' ->> '' AS parent FROM checkpoints
WHERE thread_id = :thread_id AND checkpoint_ns = :checkpoint_ns
  AND checkpoint_id = :checkpoint_id;

-- name: checkpoint_keep_only
-- All of a namespace but one checkpoint (none when :checkpoint_id is NULL), its parent cut.
DELETE FROM checkpoint_writes WHERE thread_id = :thread_id AND checkpoint_ns = :checkpoint_ns
    AND checkpoint_id IS DISTINCT FROM :checkpoint_id::text;
DELETE FROM checkpoints WHERE thread_id = :thread_id AND checkpoint_ns = :checkpoint_ns
    AND checkpoint_id IS DISTINCT FROM :checkpoint_id::text;
UPDATE checkpoints SET parent_checkpoint_id = NULL
WHERE thread_id = :thread_id AND checkpoint_ns = :checkpoint_ns;

-- name: checkpoint_drop_unused
-- Channel values no remaining checkpoint of the thread refers to.
DELETE FROM checkpoint_blobs b WHERE b.thread_id = :thread_id AND NOT EXISTS (
    SELECT 1 FROM checkpoints c
    WHERE c.thread_id = b.thread_id AND c.checkpoint_ns = b.checkpoint_ns
      AND c.checkpoint -> 'channel_versions' ->> b.channel = b.version);

-- name: checkpoint_delete_run
-- The checkpoints a run created, with their writes.
DELETE FROM checkpoint_writes WHERE thread_id = :thread_id AND checkpoint_id IN (
    SELECT checkpoint_id FROM checkpoints WHERE thread_id = :thread_id
    AND metadata ->> 'run_id' = :run_id);
DELETE FROM checkpoints WHERE thread_id = :thread_id AND metadata ->> 'run_id' = :run_id;

-- name: checkpoint_writes_of
SELECT task_id, idx FROM checkpoint_writes
WHERE thread_id = :thread_id AND checkpoint_ns = :checkpoint_ns
  AND checkpoint_id = :checkpoint_id;

-- name: checkpoint_delete_write
DELETE FROM checkpoint_writes WHERE thread_id = :thread_id AND checkpoint_ns = :checkpoint_ns
    AND checkpoint_id = :checkpoint_id AND task_id = :task_id AND idx = :idx;

-- name: hold_run
-- The fence of a run's checkpoint writes, first in their transaction: a share lock on the
-- run's row, or the error AGL01 when the attempt no longer holds it (migrations/3.sql).
SELECT agentd_hold_run(:run_id, :attempt);

-- name: lock_expired_run
-- Skipped while a write of its holder holds the row (it is renewing, or a checkpoint write is
-- under way): a stalled holder's session is ended by idle_in_transaction_session_timeout.
SELECT run_id FROM runs WHERE run_id = :run_id FOR UPDATE SKIP LOCKED;

-- name: bounded_lock_wait
-- A worker's renewal never waits long on a row lock: whatever holds it, the heartbeat goes on
-- and tries again at its next beat.
SET LOCAL lock_timeout = '5s';

-- name: lock_thread_unless_busy
-- A take-back skips a thread another transaction holds (a run's end, a claim, another
-- take-back): it comes back to it at its next beat instead of waiting behind it.
SELECT metadata, status FROM threads WHERE thread_id = :thread_id FOR UPDATE SKIP LOCKED;
