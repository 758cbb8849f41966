# syntax=docker/dockerfile:1
# reconciler: the daemon image (`reconciler run`). See deploy/kubernetes/README.md and docker-compose.yml.
#
#   docker build -t xchem/reconciler:0.1.0 .
#   docker run --rm -e AWX_TOKEN=... -e RECONCILER_DATABASE_URL=postgresql+psycopg://... -p 127.0.0.1:8080:8080 \
#       xchem/reconciler:0.1.0
#
# Stage 1 builds wheels for reconciler and every dependency; stage 2 installs them into a virtual environment on a
# clean base. The final image has no compiler, no build front-end and no source tree: only Python, pip (which the
# base image ships) and the installed wheels. tests/test_container_files.py checks this file statically.

FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY reconciler ./reconciler
# The Alembic migrations: a top-level directory that the wheel ships as the package reconciler.migrations.
COPY migrations ./migrations
# Every dependency has a binary wheel for CPython 3.11 on Linux (psycopg[binary] included), so nothing is compiled.
RUN pip wheel --wheel-dir /wheels .

FROM python:3.11-slim
# glibc gives each thread that allocates a malloc arena of its own: two keep the daemon's resident memory lower and
# its slow growth under load about half (bench/daemon_figures.py --soak 600: +0.6 rather than +1.3 MiB in 10 min).
ENV PYTHONUNBUFFERED=1 \
    MALLOC_ARENA_MAX=2 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    VIRTUAL_ENV=/opt/reconciler \
    PATH=/opt/reconciler/bin:$PATH \
    HOME=/home/reconciler \
    RECONCILER_CONFIG=/etc/reconciler/config.toml \
    RECONCILER_DATABASE_URL=sqlite:////app/reconciler.db
# The wheels are bind-mounted from the build stage for this one step, so they never become a layer of the image.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m venv "$VIRTUAL_ENV" \
    && "$VIRTUAL_ENV/bin/pip" install --no-index --find-links=/wheels reconciler \
    && groupadd --system --gid 10001 reconciler \
    && useradd --system --uid 10001 --gid 10001 --home-dir /home/reconciler --create-home --shell /usr/sbin/nologin \
        reconciler \
    && install -d -o 10001 -g 10001 /app
# A default configuration (the Fragalysis watches, listening on 0.0.0.0:8080); mount your own over it, or point
# RECONCILER_CONFIG elsewhere. The database comes from $RECONCILER_DATABASE_URL (SQLite in /app unless overridden).
COPY deploy/compose/config.toml /etc/reconciler/config.toml
WORKDIR /app
# Numeric, so that Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
EXPOSE 8080
# /healthz answers 200 while the process and its scheduler live (slim has no curl: Python's urllib it is).
# open() raises on anything but 2xx, and on a refused or timed-out connection, so the exit status is the verdict.
# No proxy: an HTTP(S)_PROXY set for the registry must not carry the container's own loopback request away.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request as u; u.build_opener(u.ProxyHandler({})).open('http://127.0.0.1:8080/healthz', timeout=4)"]
# Exec form: reconciler is PID 1 and receives SIGTERM itself (it stops cleanly within 10 s).
ENTRYPOINT ["reconciler"]
CMD ["--log-format", "json", "run"]
