-- Up Migration
-- `created_by` defaulted to current_user::regrole, which reads the role's
-- name as an identifier and so folds it to lower case: a role whose name
-- needs quotes ("AppWriter") could not enqueue at all ("role appwriter does
-- not exist"). quote_ident() makes of the name the identifier that names it.
ALTER TABLE jobs ALTER COLUMN created_by SET DEFAULT quote_ident(current_user)::regrole;
ALTER TABLE workflows ALTER COLUMN created_by SET DEFAULT quote_ident(current_user)::regrole;
ALTER TABLE job_dependencies ALTER COLUMN created_by SET DEFAULT quote_ident(current_user)::regrole;

-- Down Migration
ALTER TABLE job_dependencies ALTER COLUMN created_by SET DEFAULT current_user::regrole;
ALTER TABLE workflows ALTER COLUMN created_by SET DEFAULT current_user::regrole;
ALTER TABLE jobs ALTER COLUMN created_by SET DEFAULT current_user::regrole;
