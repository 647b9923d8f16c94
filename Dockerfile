# The taskiq-exporter image: the exporter service, the demo worker and producer,
# and the migration job of docker-compose.yml all run it.
#   docker build -t taskiq-exporter .
# Stage 1 builds the wheel from the source; stage 2 installs that wheel (not
# editable) with the locked runtime versions, so the image runs what CI tests.
FROM python:3.11.10-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY requirements/build.txt requirements/build.txt
RUN pip install --no-deps -r requirements/build.txt
COPY pyproject.toml README.md CHANGELOG.md LICENSE ./
COPY exporter ./exporter
RUN python -m build --wheel --no-isolation --outdir /dist

FROM python:3.11.10-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PROMETHEUS_MULTIPROC_DIR=/tmp/taskiq-metrics
# The locked runtime dependencies first, so that a code change does not reinstall them.
COPY requirements/runtime.txt /tmp/runtime.txt
RUN pip install --no-deps -r /tmp/runtime.txt && rm /tmp/runtime.txt
COPY --from=build /dist/ /tmp/dist/
RUN pip install --no-deps /tmp/dist/*.whl \
    && pip check \
    && rm -r /tmp/dist \
    && useradd --create-home --uid 10001 taskiq \
    && mkdir -p "$PROMETHEUS_MULTIPROC_DIR" \
    && chown taskiq "$PROMETHEUS_MULTIPROC_DIR"
USER taskiq
WORKDIR /home/taskiq

EXPOSE 8000
CMD ["taskiq-exporter", "serve", "--host", "0.0.0.0", "--port", "8000"]
