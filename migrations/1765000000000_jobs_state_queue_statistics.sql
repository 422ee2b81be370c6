-- Up Migration
-- Statistics of which states occur in which queue, so the planner stops
-- guessing that every queue has its share of every state.
--
-- With per-column statistics alone PostgreSQL multiplies the two shares:
-- on a table of a million jobs, a fifth of them waiting and five queues, it
-- counted on 39,000 waiting jobs in a queue that had none. A page of that
-- queue's waiting jobs newest first (`listJobs({ queue, state })`, the
-- console's queue page) then walked the primary key backwards through the
-- whole table looking for the 50 it expected soon: 190 ms with the table
-- in memory, 680–890 ms reading it (29,000 buffers), every time the page
-- was shown. With the combinations sampled (the most common ones, as
-- ANALYZE already samples rows), the same page reads jobs_state_queue_idx
-- and takes 1.5 ms; pages of a queue that has such jobs keep the plan they
-- had.
--
-- The statistics are gathered by ANALYZE (autovacuum's, or this one, of
-- the two columns alone: half the time of the whole row's on a million
-- rows), from the rows ANALYZE samples anyway; nothing is written when a
-- job is.
--
-- IF NOT EXISTS: run again (its pgq_migrations row deleted), it succeeds.
CREATE STATISTICS IF NOT EXISTS jobs_state_queue_stats (mcv) ON state, queue FROM jobs;
ANALYZE jobs (state, queue);

-- Down Migration
DROP STATISTICS jobs_state_queue_stats;
