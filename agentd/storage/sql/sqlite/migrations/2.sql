-- Version 2: the run lifecycle's durable cancel flag, what a rollback must restore, and the
-- thread's resting status.
ALTER TABLE runs ADD COLUMN cancel_action TEXT;
ALTER TABLE runs ADD COLUMN start_writes TEXT;
ALTER TABLE threads ADD COLUMN rest_status TEXT NOT NULL DEFAULT 'idle';
UPDATE threads SET rest_status = CASE
    WHEN status IN ('idle', 'interrupted', 'error') THEN status
    WHEN interrupts IS NOT NULL AND interrupts NOT IN ('{}', 'null') THEN 'interrupted'
    WHEN error IS NOT NULL AND error != 'null' THEN 'error'
    ELSE 'idle' END;
