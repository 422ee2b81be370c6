-- Up Migration
-- Periodic jobs: one row per schedule. The leader's scheduler fires each due
-- tick by inserting its job and advancing next_run_at in one transaction.
-- node-pg-migrate runs this with search_path set to pgq's schema.

CREATE TABLE schedules (
  name             text        PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 200),
  task             text        NOT NULL CHECK (length(task) BETWEEN 1 AND 200),
  payload          jsonb       NOT NULL DEFAULT '{}',
  cron             text        CHECK (length(cron) BETWEEN 1 AND 200),
  timezone         text        NOT NULL DEFAULT 'UTC',
  every_ms         bigint      CHECK (every_ms >= 1000),
  queue            text        NOT NULL DEFAULT 'default' CHECK (length(queue) BETWEEN 1 AND 200),
  priority         integer     NOT NULL DEFAULT 0,
  max_attempts     integer     NOT NULL DEFAULT 25 CHECK (max_attempts >= 1),
  catch_up         text        NOT NULL DEFAULT 'skip' CHECK (catch_up IN ('skip', 'once', 'all')),
  catch_up_limit   integer     NOT NULL DEFAULT 100 CHECK (catch_up_limit BETWEEN 1 AND 1000),
  misfire_grace_ms integer     NOT NULL DEFAULT 60000 CHECK (misfire_grace_ms >= 1000),
  paused           boolean     NOT NULL DEFAULT false,
  enabled          boolean     NOT NULL DEFAULT true,
  declared         boolean     NOT NULL DEFAULT false,
  next_run_at      timestamptz NOT NULL,
  last_run_at      timestamptz,
  last_job_id      bigint,
  created_at       timestamptz NOT NULL DEFAULT now(),
  updated_at       timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT schedules_cron_or_every CHECK ((cron IS NULL) <> (every_ms IS NULL))
);

COMMENT ON TABLE schedules IS 'Periodic jobs. The elected leader inserts one job per tick (unique key schedule:<name>:<tick>) and advances next_run_at in the same transaction.';
COMMENT ON COLUMN schedules.name IS 'Schedule name, unique; pgq.schedule() upserts by it.';
COMMENT ON COLUMN schedules.task IS 'Task (defineTask name) of the jobs this schedule makes.';
COMMENT ON COLUMN schedules.payload IS 'Payload of every job, validated by the task schema when the schedule was saved.';
COMMENT ON COLUMN schedules.cron IS 'Cron expression (5 fields, or 6 with seconds first, or a macro such as @daily); null for an interval schedule.';
COMMENT ON COLUMN schedules.timezone IS 'IANA time zone the cron expression is read in (daylight saving included). Unused by interval schedules.';
COMMENT ON COLUMN schedules.every_ms IS 'Fixed interval in milliseconds (ticks aligned to the Unix epoch); null for a cron schedule.';
COMMENT ON COLUMN schedules.queue IS 'Queue of the jobs this schedule makes.';
COMMENT ON COLUMN schedules.priority IS 'Priority of the jobs this schedule makes (higher runs first).';
COMMENT ON COLUMN schedules.max_attempts IS 'max_attempts of the jobs this schedule makes.';
COMMENT ON COLUMN schedules.catch_up IS 'Ticks missed by more than misfire_grace_ms: skip (drop them), once (one job for the latest), all (one job each, at most catch_up_limit).';
COMMENT ON COLUMN schedules.catch_up_limit IS 'With catch_up = all: the most missed ticks fired after an outage (the latest ones).';
COMMENT ON COLUMN schedules.misfire_grace_ms IS 'A tick fired at most this late is on time and always fires; later ones are missed and follow catch_up.';
COMMENT ON COLUMN schedules.paused IS 'Paused by an operator (pause/resume): no ticks fire; resuming starts from the next tick after that moment.';
COMMENT ON COLUMN schedules.enabled IS 'False when the schedule was declared in worker code and a worker started without it; declaring it again re-enables it.';
COMMENT ON COLUMN schedules.declared IS 'True when the schedule comes from a worker''s schedules option, false when made with pgq.schedule() or the CLI.';
COMMENT ON COLUMN schedules.next_run_at IS 'The next tick: the scheduler fires the schedule once the time passes this instant.';
COMMENT ON COLUMN schedules.last_run_at IS 'Tick time of the latest job this schedule made (or the time of the latest run-now).';
COMMENT ON COLUMN schedules.last_job_id IS 'Id of the latest job this schedule made (jobs.id; the job may have been pruned since).';
COMMENT ON COLUMN schedules.created_at IS 'When the schedule was first saved.';
COMMENT ON COLUMN schedules.updated_at IS 'When the schedule was last saved, paused, resumed, enabled or disabled (not when it fired).';

-- The scheduler's question: which active schedules are due, and when is the next one.
CREATE INDEX schedules_due_idx ON schedules (next_run_at) WHERE enabled AND NOT paused;

-- Down Migration
DROP TABLE schedules;
