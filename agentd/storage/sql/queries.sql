-- agentd's named queries that every backend runs as written (sql.py). A backend's own
-- queries are in <backend>/queries.sql. Parameters are :named; timestamps are ISO-8601 UTC
-- text (which the databases compare as times), JSON columns take JSON text.

-- ---------------------------------------------------------------- assistants

-- name: get_assistant
SELECT * FROM assistants WHERE assistant_id = :assistant_id;

-- name: insert_default_assistant
INSERT INTO assistants (assistant_id, graph_id, config, context, metadata, name, description,
                        version, created_at, updated_at)
VALUES (:assistant_id, :graph_id, '{}', '{}', :metadata, :name, :description, 1, :now, :now)
ON CONFLICT DO NOTHING;

-- name: insert_first_assistant_version
INSERT INTO assistant_versions (assistant_id, version, graph_id, config, context, metadata,
                                name, description, created_at)
SELECT assistant_id, 1, graph_id, config, context, metadata, name, description, created_at
FROM assistants WHERE assistant_id = :assistant_id
ON CONFLICT DO NOTHING;

-- name: resync_untouched_assistant
-- A default assistant never edited (one version) follows its graph's name and description.
UPDATE assistants SET name = :name, description = :description
WHERE assistant_id = :assistant_id AND graph_id = :graph_id
  AND (name != :name OR description IS DISTINCT FROM :description)
  AND (SELECT max(version) FROM assistant_versions v WHERE v.assistant_id = :assistant_id) = 1;

-- name: resync_untouched_assistant_version
UPDATE assistant_versions SET name = :name, description = :description
WHERE assistant_id = :assistant_id AND graph_id = :graph_id
  AND (name != :name OR description IS DISTINCT FROM :description)
  AND (SELECT max(version) FROM assistant_versions v WHERE v.assistant_id = :assistant_id) = 1;

-- name: insert_assistant
INSERT INTO assistants (assistant_id, graph_id, config, context, metadata, name, description,
                        version, created_at, updated_at)
VALUES (:assistant_id, :graph_id, :config, :context, :metadata, :name, :description, :version,
        :now, :now)
RETURNING *;

-- name: latest_assistant_version
SELECT max(version) AS version FROM assistant_versions WHERE assistant_id = :assistant_id;

-- name: update_assistant
UPDATE assistants SET graph_id = :graph_id, config = :config, context = :context,
    metadata = :metadata, name = :name, description = :description, version = :version,
    updated_at = :now
WHERE assistant_id = :assistant_id
RETURNING *;

-- name: insert_assistant_version
INSERT INTO assistant_versions (assistant_id, version, graph_id, config, context, metadata,
                                name, description, created_at)
VALUES (:assistant_id, :version, :graph_id, :config, :context, :metadata, :name, :description,
        :created_at);

-- name: get_assistant_version
SELECT * FROM assistant_versions WHERE assistant_id = :assistant_id AND version = :version;

-- name: delete_assistant
DELETE FROM assistants WHERE assistant_id = :assistant_id;

-- name: assistant_inflight_runs
SELECT * FROM runs WHERE status IN ('pending', 'running') AND assistant_id = :assistant_id
ORDER BY created_at;

-- ---------------------------------------------------------------- threads

-- name: insert_thread
-- No row back when the thread exists.
INSERT INTO threads (thread_id, created_at, updated_at, state_updated_at, metadata, status,
                     config)
VALUES (:thread_id, :now, :now, :now, :metadata, :status, '{}')
ON CONFLICT DO NOTHING
RETURNING *;

-- name: get_thread
SELECT * FROM threads WHERE thread_id = :thread_id;

-- name: get_thread_without_values
SELECT thread_id, created_at, updated_at, state_updated_at, metadata, status, config,
       NULL AS "values", NULL AS interrupts, error
FROM threads WHERE thread_id = :thread_id;

-- name: update_thread_metadata
UPDATE threads SET metadata = :metadata, updated_at = :now WHERE thread_id = :thread_id
RETURNING *;

-- name: set_thread_metadata
UPDATE threads SET metadata = :metadata WHERE thread_id = :thread_id;

-- name: delete_thread
-- Its runs, crons and TTL go by cascade; its checkpoints by delete_thread_checkpoints.
DELETE FROM threads WHERE thread_id = :thread_id;

-- name: set_thread_ttl
INSERT INTO thread_ttl (thread_id, strategy, ttl_minutes) VALUES (:thread_id, :strategy, :minutes)
ON CONFLICT (thread_id) DO UPDATE
SET strategy = excluded.strategy, ttl_minutes = excluded.ttl_minutes, swept_at = NULL;

-- name: get_thread_ttl
SELECT x.strategy, x.ttl_minutes, t.updated_at
FROM thread_ttl x JOIN threads t USING (thread_id) WHERE thread_id = :thread_id;

-- name: mark_thread_swept
UPDATE thread_ttl SET swept_at = :swept_at WHERE thread_id = :thread_id;

-- name: set_thread_state
UPDATE threads SET "values" = :values, interrupts = :interrupts, state_updated_at = :now,
    rest_status = :status
WHERE thread_id = :thread_id;

-- name: set_thread_outcome
UPDATE threads SET rest_status = :status, error = :error WHERE thread_id = :thread_id;

-- name: set_thread_outcome_and_state
UPDATE threads SET rest_status = :status, error = :error, "values" = :values,
    interrupts = :interrupts, state_updated_at = :now
WHERE thread_id = :thread_id;

-- name: settle_thread
-- The one statement that writes a thread's status: busy while a run is pending or running,
-- else its resting status.
UPDATE threads SET status = CASE WHEN EXISTS (
        SELECT 1 FROM runs WHERE thread_id = :thread_id AND status IN ('pending', 'running'))
    THEN 'busy' ELSE rest_status END,
    updated_at = :now
WHERE thread_id = :thread_id
RETURNING status;

-- ---------------------------------------------------------------- runs

-- name: insert_run
INSERT INTO runs (run_id, thread_id, assistant_id, created_at, updated_at, metadata, status,
                  kwargs, multitask_strategy)
VALUES (:run_id, :thread_id, :assistant_id, :created_at, :updated_at, :metadata, 'pending',
        :kwargs, :multitask_strategy)
RETURNING *;

-- name: get_run
SELECT * FROM runs WHERE run_id = :run_id;

-- name: get_thread_run
SELECT * FROM runs WHERE run_id = :run_id AND thread_id = :thread_id;

-- name: inflight_runs
SELECT * FROM runs WHERE thread_id = :thread_id AND status IN ('pending', 'running')
ORDER BY created_at;

-- name: has_inflight_run
SELECT 1 AS found FROM runs WHERE thread_id = :thread_id AND status IN ('pending', 'running')
LIMIT 1;

-- name: inflight_run_ids
SELECT thread_id, run_id FROM runs WHERE status IN ('pending', 'running') ORDER BY created_at;

-- name: run_ids_in_status
SELECT thread_id, run_id FROM runs WHERE status = :status ORDER BY created_at;

-- name: delete_thread_run
DELETE FROM runs WHERE run_id = :run_id AND thread_id = :thread_id;

-- name: delete_run
DELETE FROM runs WHERE run_id = :run_id;

-- name: run_cancel_action
SELECT cancel_action FROM runs WHERE run_id = :run_id;

-- name: flag_cancel
-- The first cancel asked wins.
UPDATE runs SET cancel_action = coalesce(cancel_action, :action) WHERE run_id = :run_id;

-- name: next_due_run
SELECT min(created_at) AS due FROM runs WHERE status = 'pending' AND created_at > :now;

-- name: claim_thread_run
-- The oldest due pending run of a thread (locked by claim_thread) with nothing running.
UPDATE runs SET status = 'running', attempt = attempt + 1, updated_at = :now,
    lease_owner = :owner, lease_expires_at = :until
WHERE run_id = (SELECT run_id FROM runs
                WHERE thread_id = :thread_id AND status = 'pending' AND created_at <= :now
                ORDER BY created_at LIMIT 1)
  AND NOT EXISTS (SELECT 1 FROM runs WHERE thread_id = :thread_id AND status = 'running')
RETURNING *;

-- name: requeue_running
-- Embedded mode, at start-up: no other process can hold a run, so every lease is stale.
UPDATE runs SET status = 'pending', lease_owner = NULL, lease_expires_at = NULL, updated_at = :now
WHERE status = 'running';

-- name: expired_leases
SELECT run_id, thread_id, attempt FROM runs
WHERE status = 'running' AND (lease_expires_at IS NULL OR lease_expires_at < :now)
ORDER BY lease_expires_at LIMIT :limit;

-- name: take_back_run
-- Under the thread's lock, and only if the lease is still out: a renewal that committed first
-- keeps the run with its holder. The dead attempt stays counted.
UPDATE runs SET status = 'pending', lease_owner = NULL, lease_expires_at = NULL, updated_at = :now
WHERE run_id = :run_id AND status = 'running' AND attempt = :attempt
  AND (lease_expires_at IS NULL OR lease_expires_at < :now);

-- name: renew_lease
UPDATE runs SET lease_expires_at = :until
WHERE run_id = :run_id AND status = 'running' AND attempt = :attempt AND lease_owner = :owner
RETURNING run_id, cancel_action;

-- name: requeue_run
-- A hand-back (shutdown) does not count as an attempt.
UPDATE runs SET status = 'pending', attempt = attempt - 1, updated_at = :now,
    lease_owner = NULL, lease_expires_at = NULL
WHERE run_id = :run_id AND status = 'running' AND attempt = :attempt;

-- name: held_run
SELECT 1 AS held FROM runs WHERE run_id = :run_id AND status = 'running' AND attempt = :attempt;

-- name: set_run_status
UPDATE runs SET status = :status, updated_at = :now WHERE run_id = :run_id;

-- name: note_start_writes
UPDATE runs SET start_writes = :start_writes WHERE run_id = :run_id;

-- name: run_start_writes
SELECT start_writes FROM runs WHERE run_id = :run_id;

-- ---------------------------------------------------------------- crons

-- name: insert_cron
INSERT INTO crons (cron_id, assistant_id, thread_id, user_id, schedule, timezone, end_time,
                   payload, metadata, on_run_completed, enabled, next_run_date, created_at,
                   updated_at)
VALUES (:cron_id, :assistant_id, :thread_id, :user_id, :schedule, :timezone, :end_time,
        :payload, :metadata, :on_run_completed, :enabled, :next_run_date, :created_at,
        :updated_at)
RETURNING *;

-- name: get_cron
SELECT * FROM crons WHERE cron_id = :cron_id;

-- name: delete_cron
DELETE FROM crons WHERE cron_id = :cron_id;

-- name: due_crons
SELECT * FROM crons
WHERE enabled = TRUE AND next_run_date IS NOT NULL AND next_run_date <= :now
ORDER BY next_run_date LIMIT :limit;

-- name: claim_cron
-- Compare-and-set: of the schedulers that saw the same due tick, one gets the row back.
UPDATE crons SET next_run_date = :next_run_date
WHERE cron_id = :cron_id AND enabled = TRUE AND next_run_date = :due
RETURNING *;

-- name: next_cron
SELECT min(next_run_date) AS due FROM crons WHERE enabled = TRUE;

-- ---------------------------------------------------------------- webhook outbox

-- name: insert_webhook
-- A run end recorded twice (a retried write whose first COMMIT did land) keeps one row.
INSERT INTO webhook_outbox (delivery_id, run_id, url, payload, next_attempt_at, created_at)
VALUES (:delivery_id, :run_id, :url, :payload, :now, :now)
ON CONFLICT DO NOTHING;

-- name: next_webhook
SELECT min(next_attempt_at) AS due FROM webhook_outbox;

-- name: retry_webhook
UPDATE webhook_outbox SET next_attempt_at = :due, locked_until = NULL,
    attempt = attempt - :uncount
WHERE delivery_id = :delivery_id;

-- name: delete_webhook
DELETE FROM webhook_outbox WHERE delivery_id = :delivery_id;

-- name: requeue_webhooks
UPDATE webhook_outbox SET next_attempt_at = :now, locked_until = NULL
WHERE locked_until IS NOT NULL;

-- ---------------------------------------------------------------- run events

-- name: get_event_log
SELECT events, bytes, expires_at FROM run_event_logs WHERE run_id = :run_id;

-- name: insert_event_log
INSERT INTO run_event_logs (run_id, thread_id) VALUES (:run_id, :thread_id);

-- name: insert_run_event
INSERT INTO run_events (run_id, ms, seq, thread_id, event, data)
VALUES (:run_id, :ms, :seq, :thread_id, :event, :data)
ON CONFLICT DO NOTHING;

-- name: count_event_log
UPDATE run_event_logs SET events = :events, bytes = :bytes WHERE run_id = :run_id;

-- name: end_event_log
UPDATE run_event_logs SET expires_at = :expires_at WHERE run_id = :run_id;

-- name: event_trim_point
-- The first event older than (ms, seq) by which `events` events and `bytes` bytes are counted.
SELECT ms, seq, n, b FROM (
    SELECT ms, seq, count(*) OVER w AS n, sum(length(data)) OVER w AS b FROM run_events
    WHERE run_id = :run_id AND (ms, seq) < (:ms, :seq)
    WINDOW w AS (ORDER BY ms, seq ROWS UNBOUNDED PRECEDING)) counted
WHERE n >= :events AND b >= :bytes LIMIT 1;

-- name: events_before
SELECT max(ms) AS ms, max(seq) AS seq, count(*) AS n, coalesce(sum(length(data)), 0) AS b
FROM run_events WHERE run_id = :run_id AND (ms, seq) < (:ms, :seq);

-- name: delete_events_before
DELETE FROM run_events WHERE run_id = :run_id AND (ms, seq) < (:ms, :seq);

-- name: delete_events_through
DELETE FROM run_events WHERE run_id = :run_id AND (ms, seq) <= (:ms, :seq);

-- name: read_run_events
-- A page: at most :limit events, and no more of them than :max_bytes of data takes (at least
-- one), so a page of large events is not all read into memory.
SELECT ms, seq, event, data FROM (
    SELECT ms, seq, event, data,
           sum(length(data)) OVER (ORDER BY ms, seq ROWS UNBOUNDED PRECEDING) - length(data)
               AS before
    FROM run_events WHERE run_id = :run_id AND (ms, seq) > (:ms, :seq)
    ORDER BY ms, seq LIMIT :limit) page
WHERE before < :max_bytes ORDER BY ms, seq;

-- name: read_thread_events
SELECT ms, seq, event, data FROM (
    SELECT e.ms, e.seq, e.event, e.data,
           sum(length(e.data)) OVER (ORDER BY e.ms, e.seq ROWS UNBOUNDED PRECEDING)
               - length(e.data) AS before
    FROM run_events e JOIN run_event_logs l ON l.run_id = e.run_id
    WHERE e.thread_id = :thread_id AND (e.ms, e.seq) > (:ms, :seq)
      AND (l.expires_at IS NULL OR l.expires_at > :now)
    ORDER BY e.ms, e.seq LIMIT :limit) page
WHERE before < :max_bytes ORDER BY ms, seq;

-- name: expire_orphan_event_logs
-- A log still open whose run is no longer in flight lost its end with a process.
UPDATE run_event_logs SET expires_at = :expires_at
WHERE expires_at IS NULL
  AND run_id NOT IN (SELECT run_id FROM runs WHERE status IN ('pending', 'running'));

-- name: expired_event_logs
SELECT run_id FROM run_event_logs WHERE expires_at <= :now;

-- name: forget_event_log
DELETE FROM run_event_logs WHERE run_id = :run_id AND expires_at <= :now;

-- name: ping
SELECT 1 AS ok;
