# syntax=docker/dockerfile:1
#
# The consortium's coordinator: Flower's SuperLink (TLS and SuperNode authentication on), which
# starts the fedneuro ServerApp installed in this image for every study `fedneuro run` submits.
#
# Build from the repository root; tag the image with the package version:
#   docker build -f deploy/coordinator.Dockerfile -t fedneuro-coordinator:0.1.0 .
# The build fails when FEDNEURO_VERSION differs from the version in pyproject.toml.
#
# Mounts (docs/coordinator.md; deploy/compose.yaml runs a whole consortium on one host):
#   /kit     the coordinator kit from `fedneuro provision`, read-only
#   /state   a writable volume: SuperLink database, one folder per study (checkpoint, adapter,
#            summary.json)
#   /kits    only where the image runs `fedneuro provision` (compose's one-shot service): the
#            volume it writes every party's kit into
# Port 8000 (the kit's SuperLink port) serves the sites (Fleet API) and `fedneuro run` (Control
# API) over TLS. Publish it only to the sites' networks: see docs/threat-model.md.

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
LABEL org.opencontainers.image.title="fedneuro-coordinator" \
      org.opencontainers.image.description="fedneuro coordinator: a Flower SuperLink running the installed fedneuro ServerApp" \
      org.opencontainers.image.version="${FEDNEURO_VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PATH=/opt/fedneuro/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    FEDNEURO_HEALTH_PORT=8000

COPY --from=build /opt/fedneuro /opt/fedneuro

# An unprivileged user that owns only /state (and /kits, where `fedneuro provision` may write
# kits into a volume, as deploy/compose.yaml does); /kit is mounted read-only.
RUN useradd --no-log-init --system --uid 10001 --user-group --create-home --home-dir /home/fedneuro fedneuro \
    && mkdir -p /state /kit /kits \
    && chown fedneuro:fedneuro /state /kits \
    && chmod 0700 /state /kits
USER 10001:10001
WORKDIR /state

VOLUME ["/state"]

# The SuperLink's one HTTP(S) port (Fleet, Control and Runtime APIs in flwr 1.42).
EXPOSE 8000

# The SuperLink port answers (the kit's port; set FEDNEURO_HEALTH_PORT when started with --port).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, socket; socket.create_connection(('127.0.0.1', int(os.environ.get('FEDNEURO_HEALTH_PORT', '8000'))), timeout=3).close()"]

ENTRYPOINT ["fedneuro", "server", "start", "--kit", "/kit", "--state", "/state"]
