# syntax=docker/dockerfile:1
# Warden sidecar image.
#   docker build -t warden .    (linux/amd64 only: pgserver ships no Linux arm64 wheel;
#                                 on arm64 add --platform linux/amd64)
#   docker run --stop-timeout 30 -p 50051:50051 -p 9464:9464 -v warden-data:/var/lib/warden warden
# With no WARDEN_DATABASE_URL, Warden starts its embedded Postgres in /var/lib/warden, which
# also holds the generated admin token and key pepper: keep it on a named volume, or they and
# the data go with the container. No VOLUME instruction on purpose: an anonymous volume would
# hide exactly that loss.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
# .dockerignore lets in only what the wheel is built from.
COPY . .
# Wheels of Warden and every runtime dependency, so the final stage needs no source tree and
# no build tools. Every dependency ships manylinux wheels (pgserver bundles the Postgres
# binaries), so nothing compiles here. The migrations ride along as package data.
RUN pip wheel . --wheel-dir /wheels

FROM ${PYTHON_IMAGE}
# Listen on all interfaces: a container's loopback is its own, so the 127.0.0.1 default would
# be unreachable through `docker run -p`. A sidecar in a Kubernetes pod shares the pod's
# network namespace with the app, so there WARDEN_LISTEN=127.0.0.1:50051 works too and keeps
# the API off the pod IP.
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    WARDEN_DATA_DIR=/var/lib/warden \
    WARDEN_LISTEN=0.0.0.0:50051 \
    WARDEN_METRICS_LISTEN=0.0.0.0:9464 \
    XDG_RUNTIME_DIR=/run/warden

# A fixed numeric uid, so Kubernetes runAsNonRoot can verify it and host directories can be
# chowned to it. (Run as root, pgserver would have to useradd a user for Postgres, which
# refuses root.) /run/warden is where pgserver keeps its lock file; without a private
# XDG_RUNTIME_DIR it warns and falls back to /tmp.
RUN groupadd --gid 10001 warden \
    && useradd --uid 10001 --gid warden --home-dir /var/lib/warden --no-create-home \
       --shell /usr/sbin/nologin warden \
    && install -d -o warden -g warden -m 0700 /var/lib/warden /run/warden

# Bind-mounted rather than copied, so the wheels never become a layer of the final image.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels /wheels/warden-*.whl

USER 10001:10001
WORKDIR /var/lib/warden

# gRPC: the Warden and Admin APIs, grpc.health.v1 and reflection.
EXPOSE 50051
# Prometheus /metrics (plain HTTP).
EXPOSE 9464

# Exits 0 only when the server reports SERVING (the data plane keeps serving while the database
# is away; `warden health --service warden.component.database` reports the database itself).
# The start period covers the embedded database's first initdb and migrations.
# If you change WARDEN_LISTEN's port, override this too.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["warden", "health", "--target", "127.0.0.1:50051", "--timeout", "4"]

# Exec form: warden is PID 1 and handles SIGTERM itself (NOT_SERVING, drain for
# WARDEN_SHUTDOWN_GRACE_SECONDS, close the pool, stop the embedded Postgres). Docker's default
# stop timeout is 10 s, the same as the default grace, hence --stop-timeout above.
ENTRYPOINT ["warden"]
CMD ["serve"]
