-- taskiq-exporter, least privilege in PostgreSQL, step 2 of 2: what each role of
-- roles.sql may do with the tables, and the reader's view of the execution log.
--
-- Run as the owner after every `taskiq-exporter db upgrade`. It revokes everything
-- and grants again, in one transaction: safe to repeat, and a privilege a new
-- release drops from this file is gone afterwards.
--
--   psql -v ON_ERROR_STOP=1 -d taskiq -U taskiq_owner -f grants.sql
--
-- Optional variables, the role names given to roles.sql: writer, service, reader
-- (default taskiq_writer, taskiq_service, taskiq_reader); and reader_details=off to
-- keep params and tracebacks from Grafana (the execution dashboard then shows none).
--
-- The views depend on task_execution_logs: a migration that drops or retypes one of
-- their columns stops on them. Then DROP VIEW task_execution_logs_redacted,
-- task_execution_details, upgrade, and run this file again.

\set ON_ERROR_STOP on

\if :{?writer}
\else
\set writer taskiq_writer
\endif
\if :{?service}
\else
\set service taskiq_service
\endif
\if :{?reader}
\else
\set reader taskiq_reader
\endif
\if :{?reader_details}
\else
\set reader_details on
\endif

BEGIN;

-- What Grafana may read of the log: no params (task arguments) and no
-- error_traceback (source lines and paths). A view reads its table with its
-- owner's privileges: the reader needs none on task_execution_logs.
DROP VIEW IF EXISTS task_execution_logs_redacted;
CREATE VIEW task_execution_logs_redacted AS
SELECT
    id,
    task_name,
    status,
    task_id,
    attempt,
    queued_at,
    started_at,
    completed_at,
    duration_ms,
    queue_wait_ms,
    error_message,
    worker_host,
    worker_pid,
    created_at,
    updated_at
FROM task_execution_logs;
COMMENT ON VIEW task_execution_logs_redacted IS
    'task_execution_logs without params and error_traceback: what the Grafana role reads';

-- One attempt's params and traceback, for the execution dashboard: the middleware
-- redacts both before they are stored (docs/security.md). The reader gets it unless
-- this file runs with -v reader_details=off.
DROP VIEW IF EXISTS task_execution_details;
CREATE VIEW task_execution_details AS
SELECT
    id,
    created_at,
    task_id,
    attempt,
    params,
    error_message,
    error_traceback
FROM task_execution_logs;
COMMENT ON VIEW task_execution_details IS
    'one attempt''s redacted params and traceback: the Grafana role reads it unless withheld';

REVOKE ALL ON ALL TABLES IN SCHEMA public FROM :"writer", :"service", :"reader";
REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM :"writer", :"service", :"reader";

-- writer (the workers): one upsert per batch, INSERT ... ON CONFLICT DO UPDATE ...
-- RETURNING (which reads the row it meets: SELECT), then the same into the minute
-- rollups, whose statement-level triggers upsert the hourly rollups with the
-- writer's privileges. The log's id comes from a sequence. No DELETE, no TRUNCATE.
GRANT SELECT, INSERT, UPDATE
    ON task_execution_logs, task_execution_rollups, task_execution_rollups_hourly
    TO :"writer";
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO :"writer";

-- service (`taskiq-exporter serve`): the API reads everything, params and tracebacks
-- included, and the migration state (503 until migrated). The reaper locks running
-- attempts (SELECT ... FOR UPDATE), fails them (UPDATE of the columns below) and adds
-- them to the rollups; retention deletes old rows and rollup minutes; the triggers
-- follow on the hourly rollups. LISTEN and advisory locks need no grant.
GRANT SELECT ON alembic_version TO :"service";
GRANT SELECT, DELETE,
      UPDATE (status, completed_at, duration_ms, error_message, updated_at)
    ON task_execution_logs TO :"service";
GRANT SELECT, INSERT, UPDATE, DELETE
    ON task_execution_rollups, task_execution_rollups_hourly
    TO :"service";

-- reader (Grafana): SELECT on the views and the rollups, nothing else.
GRANT SELECT
    ON task_execution_logs_redacted, task_execution_rollups, task_execution_rollups_hourly
    TO :"reader";
\if :reader_details
GRANT SELECT ON task_execution_details TO :"reader";
\endif

COMMIT;
