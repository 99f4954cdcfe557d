-- agentd's own tables on the embedded backend. LangGraph's AsyncSqliteSaver keeps its
-- `checkpoints` and `writes` tables in the same file.
-- Timestamps are ISO-8601 UTC strings, which sort in time order. JSON columns hold JSON text.

-- The version this file describes; older files are brought to it by sqlite-<n>.sql migrations.
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);

CREATE TABLE IF NOT EXISTS assistants (
    assistant_id TEXT PRIMARY KEY,
    graph_id     TEXT NOT NULL,
    config       TEXT NOT NULL DEFAULT '{}',
    context      TEXT NOT NULL DEFAULT '{}',
    metadata     TEXT NOT NULL DEFAULT '{}',
    name         TEXT NOT NULL,
    description  TEXT,
    version      INTEGER NOT NULL DEFAULT 1,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS assistants_graph ON assistants (graph_id, created_at);

CREATE TABLE IF NOT EXISTS assistant_versions (
    assistant_id TEXT NOT NULL REFERENCES assistants (assistant_id) ON DELETE CASCADE,
    version      INTEGER NOT NULL,
    graph_id     TEXT NOT NULL,
    config       TEXT NOT NULL DEFAULT '{}',
    context      TEXT NOT NULL DEFAULT '{}',
    metadata     TEXT NOT NULL DEFAULT '{}',
    name         TEXT NOT NULL,
    description  TEXT,
    created_at   TEXT NOT NULL,
    PRIMARY KEY (assistant_id, version)
);

CREATE TABLE IF NOT EXISTS threads (
    thread_id        TEXT PRIMARY KEY,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    state_updated_at TEXT NOT NULL,
    metadata         TEXT NOT NULL DEFAULT '{}',
    status           TEXT NOT NULL DEFAULT 'idle',
    config           TEXT NOT NULL DEFAULT '{}',
    "values"         TEXT,
    interrupts       TEXT,
    error            TEXT,
    -- What `status` is whenever no run is pending or running: idle, interrupted or error.
    -- `status` itself is derived from it (busy while a run is in flight) in one place only.
    rest_status      TEXT NOT NULL DEFAULT 'idle'
);
CREATE INDEX IF NOT EXISTS threads_updated ON threads (updated_at);
CREATE INDEX IF NOT EXISTS threads_status ON threads (status, updated_at);

-- The run queue: a run is claimable when pending, due, and its thread has no running run.
CREATE TABLE IF NOT EXISTS runs (
    run_id             TEXT PRIMARY KEY,
    thread_id          TEXT NOT NULL REFERENCES threads (thread_id) ON DELETE CASCADE,
    assistant_id       TEXT NOT NULL,
    created_at         TEXT NOT NULL,
    updated_at         TEXT NOT NULL,
    metadata           TEXT NOT NULL DEFAULT '{}',
    status             TEXT NOT NULL,
    kwargs             TEXT NOT NULL,
    multitask_strategy TEXT NOT NULL,
    attempt            INTEGER NOT NULL DEFAULT 0,
    -- A cancel asked of a running run (interrupt or rollback): its executor honours it at a
    -- safe point; a run handed back to the queue keeps it, so a restart cannot undo it.
    cancel_action      TEXT,
    -- The pending writes already on the checkpoints this run started from (JSON), noted at its
    -- first claim: a rollback removes the writes the run added there, as well as the
    -- checkpoints it created, so the thread is as it was before the run.
    start_writes       TEXT,
    -- Who holds a running run (a worker's identity) and until when, unless it renews: a run
    -- whose lease ran out is taken back by whoever recovers it.
    lease_owner        TEXT,
    lease_expires_at   TEXT
);
CREATE INDEX IF NOT EXISTS runs_thread ON runs (thread_id, created_at);
CREATE INDEX IF NOT EXISTS runs_status ON runs (status, created_at);
CREATE INDEX IF NOT EXISTS runs_thread_status ON runs (thread_id, status);

-- Crons: a schedule and the run payload each firing queues. The scheduler claims a firing by
-- moving next_run_date forward with a compare-and-set, so a tick fires once however many
-- schedulers look at it. Deleting a thread or an assistant deletes its crons.
CREATE TABLE IF NOT EXISTS crons (
    cron_id          TEXT PRIMARY KEY,
    assistant_id     TEXT NOT NULL REFERENCES assistants (assistant_id) ON DELETE CASCADE,
    thread_id        TEXT REFERENCES threads (thread_id) ON DELETE CASCADE,
    user_id          TEXT,
    schedule         TEXT NOT NULL,
    timezone         TEXT,
    end_time         TEXT,
    payload          TEXT NOT NULL,
    metadata         TEXT NOT NULL DEFAULT '{}',
    on_run_completed TEXT,
    enabled          INTEGER NOT NULL DEFAULT 1,
    next_run_date    TEXT,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS crons_due ON crons (enabled, next_run_date);
CREATE INDEX IF NOT EXISTS crons_thread ON crons (thread_id);
CREATE INDEX IF NOT EXISTS crons_assistant ON crons (assistant_id);

-- A thread's time to live: it expires `ttl_minutes` after its last write (threads.updated_at),
-- unless a run is pending or running on it. `swept_at` is the updated_at a keep_latest sweep
-- last pruned, so an unchanged thread is not pruned again.
CREATE TABLE IF NOT EXISTS thread_ttl (
    thread_id   TEXT PRIMARY KEY REFERENCES threads (thread_id) ON DELETE CASCADE,
    strategy    TEXT NOT NULL,
    ttl_minutes REAL NOT NULL,
    swept_at    TEXT
);

-- The webhook outbox: a delivery is inserted in the transaction that records its run's end and
-- deleted once delivered or given up, so a crash never loses one. No foreign key: the run may
-- be deleted (rollback, a temporary thread) and its webhook must still go out. A delivery is
-- claimable when next_attempt_at is due; a claim leases it by moving next_attempt_at (and
-- locked_until) past the longest an attempt can take, so no two senders deliver it at once
-- and one whose sender died is claimed again when the lease runs out. `attempt` counts
-- attempts started, a crash's included.
CREATE TABLE IF NOT EXISTS webhook_outbox (
    delivery_id     TEXT PRIMARY KEY,
    run_id          TEXT NOT NULL,
    url             TEXT NOT NULL,
    payload         BLOB NOT NULL,
    attempt         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL,
    locked_until    TEXT,
    created_at      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS webhook_outbox_due ON webhook_outbox (next_attempt_at);

-- The events of resumable runs (stream_resumable), kept for Last-Event-ID replay. A run's log
-- counts its events and their bytes (for the caps: oldest trimmed first) and says when they
-- expire: NULL while the run is in flight, RESUMABLE_STREAM_TTL_SECONDS after its end. Events
-- (those the run's stream shows, which the thread stream shows too) are inserted in id order
-- (ms, seq). No foreign keys: a log outlives its run by the TTL, and the sweeper deletes it.
CREATE TABLE IF NOT EXISTS run_event_logs (
    run_id     TEXT PRIMARY KEY,
    thread_id  TEXT NOT NULL,
    events     INTEGER NOT NULL DEFAULT 0,
    bytes      INTEGER NOT NULL DEFAULT 0,
    expires_at REAL
);
CREATE INDEX IF NOT EXISTS run_event_logs_expiry ON run_event_logs (expires_at);

CREATE TABLE IF NOT EXISTS run_events (
    run_id    TEXT NOT NULL,
    ms        INTEGER NOT NULL,
    seq       INTEGER NOT NULL,
    thread_id TEXT NOT NULL,
    event     TEXT NOT NULL,
    data      BLOB NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS run_events_run ON run_events (run_id, ms, seq);
CREATE INDEX IF NOT EXISTS run_events_thread ON run_events (thread_id, ms, seq);
