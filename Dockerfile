# The taskiq-exporter image: the exporter service, the demo worker and producer,
# and the migration job of docker-compose.yml all run it.
FROM python:3.11.10-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PROMETHEUS_MULTIPROC_DIR=/tmp/taskiq-metrics

WORKDIR /app
# Dependencies first, so that a code change does not reinstall them.
COPY pyproject.toml README.md ./
COPY exporter/__init__.py exporter/__init__.py
RUN pip install ".[redis]" && pip uninstall -y taskiq-exporter

COPY . .
# Editable: the migrations (alembic.ini, alembic/) are found next to the package.
RUN pip install --no-deps -e ".[redis]" \
    && useradd --create-home --uid 10001 taskiq \
    && mkdir -p "$PROMETHEUS_MULTIPROC_DIR" \
    && chown taskiq "$PROMETHEUS_MULTIPROC_DIR"
USER taskiq

EXPOSE 8000
CMD ["taskiq-exporter", "serve", "--host", "0.0.0.0", "--port", "8000"]
