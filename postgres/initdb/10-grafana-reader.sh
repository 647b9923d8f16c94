#!/bin/sh
# Runs once, when the postgres container initialises an empty data directory.
# Grafana reads the execution log through this role: SELECT only, on the tables the
# application's migrations create later (hence ALTER DEFAULT PRIVILEGES).
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v owner="$POSTGRES_USER" -v db="$POSTGRES_DB" \
  -v reader_password="$GRAFANA_READER_PASSWORD" <<'SQL'
CREATE ROLE grafana_reader LOGIN PASSWORD :'reader_password';
GRANT CONNECT ON DATABASE :"db" TO grafana_reader;
GRANT USAGE ON SCHEMA public TO grafana_reader;
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA public
  GRANT SELECT ON TABLES TO grafana_reader;
ALTER ROLE grafana_reader SET statement_timeout = '10s';
SQL
