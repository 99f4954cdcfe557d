-- Version 3: the fence of a run attempt's checkpoint writes as one statement that fails. The
-- writes and this check go to the server as one pipeline, one implicit transaction: when the
-- attempt no longer holds the run, the error rolls back what the pipeline wrote. The share
-- lock makes a take-back (an UPDATE of the row) wait for a write that checked first.
-- (Migrations split at a ';' that ends a line: the body keeps its ';' inside lines.)
CREATE OR REPLACE FUNCTION agentd_hold_run(held_run_id TEXT, held_attempt INTEGER) RETURNS void
LANGUAGE plpgsql AS $$ BEGIN
  PERFORM 1 FROM runs WHERE run_id = held_run_id AND status = 'running' AND attempt = held_attempt FOR SHARE; IF NOT FOUND THEN
    RAISE EXCEPTION 'run % is no longer held by attempt %', held_run_id, held_attempt USING ERRCODE = 'AGL01'; END IF; END $$;
