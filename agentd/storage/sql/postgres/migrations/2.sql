-- Version 2: run leases. The worker holding a running run renews its lease; a run whose lease
-- ran out is taken back (its holder died or stalled), with nothing else to go on.
ALTER TABLE runs ADD COLUMN lease_owner TEXT;
ALTER TABLE runs ADD COLUMN lease_expires_at TIMESTAMPTZ;
CREATE INDEX runs_lease ON runs (lease_expires_at) WHERE status = 'running';
