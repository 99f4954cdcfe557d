-- agentd's tables on PostgreSQL, version 1 (the SQLite schema's version 2, typed): times are
-- timestamptz, JSON is jsonb, payloads bytea. LangGraph's AsyncPostgresSaver and
-- AsyncPostgresStore keep their own tables (checkpoints, checkpoint_blobs, checkpoint_writes,
-- store...) and migrations in the same database. `row_order` orders rows inserted in the same
-- microsecond as they were inserted (SQLite's rowid).

CREATE TABLE assistants (
    assistant_id TEXT PRIMARY KEY,
    graph_id     TEXT NOT NULL,
    config       JSONB NOT NULL DEFAULT '{}',
    context      JSONB NOT NULL DEFAULT '{}',
    metadata     JSONB NOT NULL DEFAULT '{}',
    name         TEXT NOT NULL,
    description  TEXT,
    version      INTEGER NOT NULL DEFAULT 1,
    created_at   TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL,
    row_order    BIGINT GENERATED ALWAYS AS IDENTITY
);
CREATE INDEX assistants_graph ON assistants (graph_id, created_at);
CREATE INDEX assistants_metadata ON assistants USING gin (metadata jsonb_path_ops);

CREATE TABLE assistant_versions (
    assistant_id TEXT NOT NULL REFERENCES assistants (assistant_id) ON DELETE CASCADE,
    version      INTEGER NOT NULL,
    graph_id     TEXT NOT NULL,
    config       JSONB NOT NULL DEFAULT '{}',
    context      JSONB NOT NULL DEFAULT '{}',
    metadata     JSONB NOT NULL DEFAULT '{}',
    name         TEXT NOT NULL,
    description  TEXT,
    created_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (assistant_id, version)
);

CREATE TABLE threads (
    thread_id        TEXT PRIMARY KEY,
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL,
    state_updated_at TIMESTAMPTZ NOT NULL,
    metadata         JSONB NOT NULL DEFAULT '{}',
    status           TEXT NOT NULL DEFAULT 'idle',
    config           JSONB NOT NULL DEFAULT '{}',
    "values"         JSONB,
    interrupts       JSONB,
    error            JSONB,
    -- What `status` is whenever no run is pending or running: idle, interrupted or error.
    rest_status      TEXT NOT NULL DEFAULT 'idle',
    row_order        BIGINT GENERATED ALWAYS AS IDENTITY
);
CREATE INDEX threads_updated ON threads (updated_at);
CREATE INDEX threads_status ON threads (status, updated_at);
CREATE INDEX threads_created ON threads (created_at);
CREATE INDEX threads_metadata ON threads USING gin (metadata jsonb_path_ops);

CREATE TABLE runs (
    run_id             TEXT PRIMARY KEY,
    thread_id          TEXT NOT NULL REFERENCES threads (thread_id) ON DELETE CASCADE,
    assistant_id       TEXT NOT NULL,
    created_at         TIMESTAMPTZ NOT NULL,
    updated_at         TIMESTAMPTZ NOT NULL,
    metadata           JSONB NOT NULL DEFAULT '{}',
    status             TEXT NOT NULL,
    kwargs             JSONB NOT NULL,
    multitask_strategy TEXT NOT NULL,
    attempt            INTEGER NOT NULL DEFAULT 0,
    cancel_action      TEXT,
    start_writes       JSONB,
    row_order          BIGINT GENERATED ALWAYS AS IDENTITY
);
CREATE INDEX runs_thread ON runs (thread_id, created_at);
CREATE INDEX runs_pending ON runs (created_at) WHERE status = 'pending';
CREATE INDEX runs_status ON runs (status, created_at);
CREATE INDEX runs_assistant ON runs (assistant_id) WHERE status IN ('pending', 'running');
-- The database, not only the process, keeps one running run per thread.
CREATE UNIQUE INDEX runs_one_running ON runs (thread_id) WHERE status = 'running';

CREATE TABLE crons (
    cron_id          TEXT PRIMARY KEY,
    assistant_id     TEXT NOT NULL REFERENCES assistants (assistant_id) ON DELETE CASCADE,
    thread_id        TEXT REFERENCES threads (thread_id) ON DELETE CASCADE,
    user_id          TEXT,
    schedule         TEXT NOT NULL,
    timezone         TEXT,
    end_time         TIMESTAMPTZ,
    payload          JSONB NOT NULL,
    metadata         JSONB NOT NULL DEFAULT '{}',
    on_run_completed TEXT,
    enabled          BOOLEAN NOT NULL DEFAULT TRUE,
    next_run_date    TIMESTAMPTZ,
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL,
    row_order        BIGINT GENERATED ALWAYS AS IDENTITY
);
CREATE INDEX crons_due ON crons (next_run_date) WHERE enabled;
CREATE INDEX crons_thread ON crons (thread_id);
CREATE INDEX crons_assistant ON crons (assistant_id);

CREATE TABLE thread_ttl (
    thread_id   TEXT PRIMARY KEY REFERENCES threads (thread_id) ON DELETE CASCADE,
    strategy    TEXT NOT NULL,
    ttl_minutes DOUBLE PRECISION NOT NULL,
    swept_at    TIMESTAMPTZ
);

CREATE TABLE webhook_outbox (
    delivery_id     TEXT PRIMARY KEY,
    run_id          TEXT NOT NULL,
    url             TEXT NOT NULL,
    payload         BYTEA NOT NULL,
    attempt         INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL,
    locked_until    TIMESTAMPTZ,
    created_at      TIMESTAMPTZ NOT NULL
);
CREATE INDEX webhook_outbox_due ON webhook_outbox (next_attempt_at);

CREATE TABLE run_event_logs (
    run_id     TEXT PRIMARY KEY,
    thread_id  TEXT NOT NULL,
    events     INTEGER NOT NULL DEFAULT 0,
    bytes      BIGINT NOT NULL DEFAULT 0,
    expires_at DOUBLE PRECISION
);
CREATE INDEX run_event_logs_expiry ON run_event_logs (expires_at);

CREATE TABLE run_events (
    row_order BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id    TEXT NOT NULL,
    ms        BIGINT NOT NULL,
    seq       BIGINT NOT NULL,
    thread_id TEXT NOT NULL,
    event     TEXT NOT NULL,
    data      BYTEA NOT NULL
);
CREATE UNIQUE INDEX run_events_run ON run_events (run_id, ms, seq);
CREATE INDEX run_events_thread ON run_events (thread_id, ms, seq);
