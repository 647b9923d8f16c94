#!/bin/sh
# Runs once, when the postgres container initialises an empty data directory, as
# the superuser: the owner, writer, service and reader roles of the SQL the package
# ships (exporter/assets/postgres/roles.sql, mounted at /taskiq-sql), with roles.sql's
# default names taskiq_owner, taskiq_writer, taskiq_service and taskiq_reader. Their
# table privileges and the reader's view come after the migration: the db-grants
# service runs grants.sql as the owner.
set -eu
psql -X -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v owner_password="$TASKIQ_OWNER_PASSWORD" \
  -v writer_password="$TASKIQ_WRITER_PASSWORD" \
  -v service_password="$TASKIQ_SERVICE_PASSWORD" \
  -v reader_password="$GRAFANA_READER_PASSWORD" \
  -f /taskiq-sql/roles.sql
