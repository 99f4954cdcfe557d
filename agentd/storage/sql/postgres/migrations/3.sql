-- Version 3: the fence of a run attempt's checkpoint writes, first in their transaction: a
-- share lock on the run's row, so that a take-back (an UPDATE of the row) waits for the write,
-- or the error AGL01 when the attempt no longer holds the run (the write is rolled back).
-- (Migrations split at a ';' that ends a line: the body keeps its ';' inside lines.)
CREATE OR REPLACE FUNCTION agentd_hold_run(held_run_id TEXT, held_attempt INTEGER) RETURNS void
LANGUAGE plpgsql AS $$ BEGIN
  PERFORM 1 FROM runs WHERE run_id = held_run_id AND status = 'running' AND attempt = held_attempt FOR SHARE; IF NOT FOUND THEN
    RAISE EXCEPTION 'run % is no longer held by attempt %', held_run_id, held_attempt USING ERRCODE = 'AGL01'; END IF; END $$;
