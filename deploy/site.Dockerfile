# syntax=docker/dockerfile:1
#
# A hospital's fedneuro site: the SuperNode that dials the coordinator (outbound only) and runs
# the fedneuro installed in this image, under the site's own configuration and policy.
#
# Build from the repository root; tag the image with the package version:
#   docker build -f deploy/site.Dockerfile -t fedneuro-site:0.1.0 .
# The build fails when FEDNEURO_VERSION differs from the version in pyproject.toml.
#
# Mounts (docs/site-operator.md; deploy/compose.yaml runs three sites on one host):
#   /data               the site's BIDS dataset, read-only (`:ro`)
#   /state              a separate writable volume: privacy ledger, consent registry, audit log,
#                       window cache, noise secret
#   /kit                this site's kit from `fedneuro provision`, read-only
#   /config/site.toml   the site's configuration, read-only (bids_root = "/data", state_dir = "/state")
# Nothing is exposed: the site only dials out to the coordinator's SuperLink.

# ---- build: a virtual environment with the pinned CPU torch and fedneuro ----------------------
FROM python:3.11.14-slim-bookworm AS build

ARG FEDNEURO_VERSION=0.1.0
# CPU wheels: PyPI's Linux torch is a CUDA build several GB larger. A GPU site builds with
# --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 (same pinned versions).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/fedneuro/bin:$PATH

# torch and torchaudio first, as a pinned pair (braindecode imports torchaudio; see pyproject.toml),
# in a layer of their own so that a code change does not download them again.
RUN python -m venv /opt/fedneuro \
    && pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" torch==2.9.1 torchaudio==2.9.1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY fedneuro ./fedneuro
COPY client ./client
COPY server ./server
# Every other dependency is pinned in pyproject.toml; the installed torch pair satisfies its pins.
RUN pip install --no-cache-dir . \
    && installed="$(python -c 'import importlib.metadata as m; print(m.version("fedneuro"))')" \
    && if [ "${installed}" != "${FEDNEURO_VERSION}" ]; then \
         echo "FEDNEURO_VERSION=${FEDNEURO_VERSION} but the package is ${installed}: tag the image with ${installed}" >&2; \
         exit 1; \
       fi

# ---- runtime ----------------------------------------------------------------------------------
FROM python:3.11.14-slim-bookworm

ARG FEDNEURO_VERSION=0.1.0
LABEL org.opencontainers.image.title="fedneuro-site" \
      org.opencontainers.image.description="fedneuro site: a Flower SuperNode running the installed fedneuro ClientApp" \
      org.opencontainers.image.version="${FEDNEURO_VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PATH=/opt/fedneuro/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    FEDNEURO_HEALTH_PORT=9094

COPY --from=build /opt/fedneuro /opt/fedneuro

# An unprivileged user that owns only /state; /data, /kit and /config are mounted read-only.
RUN useradd --no-log-init --system --uid 10001 --user-group --create-home --home-dir /home/fedneuro fedneuro \
    && mkdir -p /data /state /kit /config \
    && chown fedneuro:fedneuro /state \
    && chmod 0700 /state
USER 10001:10001
WORKDIR /state

# /data: the site's BIDS dataset, mounted read-only. /state: a separate writable volume for the
# privacy ledger, consent registry, audit log, window cache and noise secret.
VOLUME ["/data", "/state"]

# The SuperNode's local Runtime API (flower-supernode --port, 127.0.0.1:9094) answers while the
# SuperNode runs. Loopback only: nothing is exposed.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, socket; socket.create_connection(('127.0.0.1', int(os.environ.get('FEDNEURO_HEALTH_PORT', '9094'))), timeout=3).close()"]

ENTRYPOINT ["fedneuro", "site", "start", "--kit", "/kit", "--config", "/config/site.toml"]
