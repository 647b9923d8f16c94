-- taskiq-exporter, least privilege in PostgreSQL (13 or later), step 1 of 2: the roles.
--
-- Four login roles, none of them a superuser:
--   owner    owns the database and its tables; runs `taskiq-exporter db upgrade`
--   writer   the workers' MonitoringMiddleware: writes the log and the rollups
--   service  `taskiq-exporter serve`: reads everything, and the reaper's and the
--            retention job's UPDATE and DELETE
--   reader   Grafana: the rollups and a view of the log without params and
--            tracebacks; read-only transactions, a few connections, a timeout
-- Their table privileges and the reader's view are step 2, grants.sql, which the
-- owner runs after every `taskiq-exporter db upgrade`.
--
-- Run as a superuser (or a managed service's administrator role), on the exporter's
-- own database, before the first upgrade. Running it again sets the passwords and
-- limits again.
--
--   psql -v ON_ERROR_STOP=1 -d taskiq \
--        -v owner_password=... -v writer_password=... \
--        -v service_password=... -v reader_password=... \
--        -f roles.sql
--
-- Optional variables: db (connect to it first; default: the current database),
-- owner, writer, service, reader (role names; default taskiq_owner, taskiq_writer,
-- taskiq_service, taskiq_reader), reader_connection_limit (10),
-- reader_statement_timeout (10s).
--
-- The database must be the exporter's alone: it becomes the owner's, and PUBLIC
-- (every other role) loses CONNECT and TEMPORARY on it.
-- The passwords travel in ALTER ROLE statements: with log_statement = 'ddl' or
-- 'all' they reach the server log.

\set ON_ERROR_STOP on

\if :{?db}
\connect :"db"
\endif
\if :{?owner}
\else
\set owner taskiq_owner
\endif
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
\if :{?reader_connection_limit}
\else
\set reader_connection_limit 10
\endif
\if :{?reader_statement_timeout}
\else
\set reader_statement_timeout 10s
\endif

-- Refuse to start rather than create a role without a password (psql variables
-- are not expanded inside DO blocks: the checks run here, the errors there).
\if :{?owner_password}
\if :{?writer_password}
\if :{?service_password}
\if :{?reader_password}
\set passwords_given true
\endif
\endif
\endif
\endif
\if :{?passwords_given}
\else
DO $$ BEGIN RAISE EXCEPTION 'roles.sql: set -v owner_password=... -v writer_password=... -v service_password=... -v reader_password=...'; END $$;
\endif

SELECT
    least(length(:'owner_password'), length(:'writer_password'),
          length(:'service_password'), length(:'reader_password')) = 0 AS empty_password,
    (SELECT count(DISTINCT name) < 4
     FROM (VALUES (:'owner'), (:'writer'), (:'service'), (:'reader')) AS names (name))
        AS same_names,
    EXISTS (
        SELECT FROM pg_roles
        WHERE rolname IN (:'owner', :'writer', :'service', :'reader')
          AND (rolsuper OR rolcreaterole OR rolcreatedb OR rolreplication OR rolbypassrls
               OR rolname IN (current_user, session_user))
    ) AS privileged_name,
    :'reader_connection_limit' !~ '^[0-9]+$' AS bad_connection_limit
\gset
\if :empty_password
DO $$ BEGIN RAISE EXCEPTION 'roles.sql: a password is empty'; END $$;
\endif
\if :same_names
DO $$ BEGIN RAISE EXCEPTION 'roles.sql: owner, writer, service and reader need four different names'; END $$;
\endif
\if :privileged_name
DO $$ BEGIN RAISE EXCEPTION 'roles.sql: a role of that name exists with SUPERUSER, CREATEROLE, CREATEDB, REPLICATION or BYPASSRLS, or is the one running this file: choose other names'; END $$;
\endif
\if :bad_connection_limit
DO $$ BEGIN RAISE EXCEPTION 'roles.sql: reader_connection_limit must be a whole number'; END $$;
\endif

-- The roles: created once, without any of the attributes that reach past the tables.
SELECT
    NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'owner') AS create_owner,
    NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'writer') AS create_writer,
    NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'service') AS create_service,
    NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'reader') AS create_reader,
    (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) AS run_by_superuser
\gset
\if :create_owner
CREATE ROLE :"owner" NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
\endif
\if :create_writer
CREATE ROLE :"writer" NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
\endif
\if :create_service
CREATE ROLE :"service" NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
\endif
\if :create_reader
CREATE ROLE :"reader" NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
\endif
ALTER ROLE :"owner" WITH LOGIN PASSWORD :'owner_password';
ALTER ROLE :"writer" WITH LOGIN PASSWORD :'writer_password';
ALTER ROLE :"service" WITH LOGIN PASSWORD :'service_password';
ALTER ROLE :"reader" WITH LOGIN CONNECTION LIMIT :reader_connection_limit
    PASSWORD :'reader_password';

-- Grafana's role. A read-only default and a statement timeout, but a role may SET
-- both for its own session (PostgreSQL has no per-role maximum for user settings):
-- what protects the data is that the reader is granted SELECT on the rollups and the
-- view only (grants.sql). temp_file_limit is a superuser setting: the reader cannot
-- raise it.
ALTER ROLE :"reader" SET default_transaction_read_only = on;
ALTER ROLE :"reader" SET statement_timeout = :'reader_statement_timeout';
ALTER ROLE :"reader" SET idle_in_transaction_session_timeout = '1min';
-- Grafana's ${var:sqlstring} doubles quotes but not backslashes: the history
-- dashboard's literals are safe only while a backslash is an ordinary character.
ALTER ROLE :"reader" SET standard_conforming_strings = on;
\if :run_by_superuser
ALTER ROLE :"reader" SET temp_file_limit = '1GB';
\endif

-- The schema, while the database still belongs to whoever runs this file (on
-- PostgreSQL 15 and later the public schema belongs to the database's owner).
-- Only the owner creates objects; no role may create temporary ones, which would
-- come first on the search path of the triggers' functions.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE, CREATE ON SCHEMA public TO :"owner";
GRANT USAGE ON SCHEMA public TO :"writer", :"service", :"reader";

SELECT current_database() AS current_db \gset
REVOKE ALL ON DATABASE :"current_db" FROM PUBLIC;
GRANT CONNECT ON DATABASE :"current_db" TO :"writer", :"service", :"reader";
ALTER DATABASE :"current_db" OWNER TO :"owner";
