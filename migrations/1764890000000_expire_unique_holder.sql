-- Up Migration
-- An enqueue of a unique key whose live holder has expired (no leader ran
-- the expirer yet) ends that holder, as the expirer would, and inserts its
-- own job. It did so with an UPDATE of `jobs`, which an enqueue-only role
-- (pgq roles) may not run: its enqueue failed with "permission denied".
-- This function does that one thing as the schema's owner, for any role:
-- it ends only jobs past their expiry, which the expirer ends anyway.
CREATE FUNCTION expire_unique_holder(p_task text, p_key text) RETURNS SETOF bigint
  LANGUAGE plpgsql SECURITY DEFINER AS $$
DECLARE
  ended bigint;
BEGIN
  FOR ended IN
    UPDATE jobs j
       SET state = 'cancelled', finished_at = now(),
           errors = j.errors || jsonb_build_array(jsonb_build_object(
             'attempt', j.attempts,
             'message', CASE WHEN j.attempts > 0 THEN 'expired: its retry was not started by its expiry time '
                             ELSE 'expired: not started by its expiry time ' END || to_char(j.expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
             'at', now()))
     WHERE j.task = p_task AND j.unique_key = p_key
       AND j.state IN ('scheduled', 'available', 'retryable') AND j.expires_at <= statement_timestamp()
    RETURNING j.id
  LOOP
    PERFORM pg_notify('pgq:' || current_schema() || ':done', ended::text);
    RETURN NEXT ended;
  END LOOP;
END
$$;
COMMENT ON FUNCTION expire_unique_holder(text, text) IS 'Ends (cancelled, as expired) the job of the task and unique key that is past its expiry and never started, as the expirer would; returns its id. Runs as the owner, so an enqueue-only role''s enqueue of that key can call it.';

DO $$
BEGIN
  EXECUTE format('ALTER FUNCTION expire_unique_holder(text, text) SET search_path = %I, pg_temp', current_schema());
END
$$;

-- Down Migration
DROP FUNCTION expire_unique_holder(text, text);
