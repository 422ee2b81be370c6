-- Which tasks each worker can run, so pgq can say when jobs wait for a task
-- no live worker knows (a typo, or a worker not yet deployed).
ALTER TABLE workers ADD COLUMN tasks text[];
COMMENT ON COLUMN workers.tasks IS 'Names of the tasks the worker can run, written when it registers; null for a worker that did not say (it may know any task).';
