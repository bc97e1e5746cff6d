# syntax=docker/dockerfile:1
#
# dbevent-bridge container image.
#
# Actian's Ingres client runtime is not redistributable, so the production
# image takes it from you, in one of two ways (README, "Deploying"):
#
#   INGRES_SOURCE=tarball (default): a tar.gz of an installed client's
#       $II_SYSTEM/ingres tree, placed in the build context, e.g.
#         tar -C "$II_SYSTEM" -czf ingres-client/ingres-client.tar.gz ingres
#         docker build -t dbevent-bridge .
#   INGRES_SOURCE=image: an image that already has the client installed:
#         docker build --build-arg INGRES_SOURCE=image \
#           --build-arg INGRES_BASE=my-registry/ingres-client:11.2 \
#           --build-arg INGRES_BASE_II_SYSTEM=/opt/Actian/IngresII -t dbevent-bridge .
#
# The `demo` target needs neither: it compiles the OpenAPI simulator's
# libiiapi.1.so (`dbevent-bridge sim ii-system`) in a throw-away stage that
# has gcc, and copies only the library into an image without a compiler:
#         docker build --target demo -t dbevent-bridge:demo .
#
# Both final images: python:3.11-slim, non-root user `bridge` (uid 10001),
# spool on VOLUME /var/lib/dbevent-bridge, HEALTHCHECK on GET /healthz,
# entrypoint config/docker/entrypoint.sh (checks II_SYSTEM, then execs
# `dbevent-bridge "$@"`, default `run`).

ARG PYTHON_IMAGE=python:3.11-slim
ARG INGRES_SOURCE=tarball
ARG INGRES_BASE=scratch

# ---------------------------------------------------------------------------
# build: the bridge and its dependencies in a virtual environment. Every
# dependency ships wheels, so this stage needs no compiler.
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bridge ./bridge
# `.` is this source tree; its dependency ranges live in pyproject.toml.
RUN /opt/venv/bin/pip install --no-compile . \
    && /opt/venv/bin/python -m compileall -q /opt/venv/lib

# ---------------------------------------------------------------------------
# ingres-client: the Ingres client runtime at /opt/ingres/ingres, from the
# tarball in the build context or from INGRES_BASE's ${INGRES_BASE_II_SYSTEM},
# as INGRES_SOURCE says. One stage, both sources mounted, the choice made by
# config/docker/ingres-client.sh: a stage picked by an argument
# (`FROM ingres-${INGRES_SOURCE}`) is pruned as unused by buildah 1.28 (podman
# 4.3), which then looks its name up as an image. Mounts, not COPY, keep the
# tarball and INGRES_BASE's other files out of every layer; an INGRES_BASE of
# `scratch` (the default) mounts as an empty directory.
FROM ${INGRES_BASE} AS ingres-base-image

FROM ${PYTHON_IMAGE} AS ingres-client
ARG INGRES_SOURCE
ARG INGRES_CLIENT_TARBALL=ingres-client/ingres-client.tar.gz
ARG INGRES_BASE_II_SYSTEM=/opt/Actian/IngresII
RUN --mount=type=bind,target=/context \
    --mount=type=bind,from=ingres-base-image,target=/ingres-base \
    sh /context/config/docker/ingres-client.sh /opt/ingres /context /ingres-base

# ---------------------------------------------------------------------------
# The demo's client runtime: the simulator's libiiapi.1.so, compiled here
# with gcc; only /opt/ingres leaves this stage. gcc comes before the bridge,
# so that a change to the bridge reuses the compiler's layer.
FROM ${PYTHON_IMAGE} AS simulator-client
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/venv /opt/venv
# The last line `sim ii-system` prints is the II_SYSTEM it built.
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN ii_system="$(/opt/venv/bin/dbevent-bridge sim ii-system | tail -n 1)" \
    && mkdir -p /opt/ingres/ingres/lib \
    && cp "${ii_system}/ingres/lib/libiiapi.1.so" /opt/ingres/ingres/lib/ \
    && test -f /opt/ingres/ingres/lib/libiiapi.1.so

# ---------------------------------------------------------------------------
# base: what both final images share.
FROM ${PYTHON_IMAGE} AS base
LABEL org.opencontainers.image.title="dbevent-bridge" \
      org.opencontainers.image.description="Publishes Actian Ingres DBEvents to RabbitMQ" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/venv/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    II_SYSTEM=/opt/ingres
RUN groupadd --system --gid 10001 bridge \
    && useradd --system --uid 10001 --gid bridge --no-create-home \
       --home-dir /var/lib/dbevent-bridge --shell /usr/sbin/nologin bridge \
    && install -d -o bridge -g bridge -m 0700 /var/lib/dbevent-bridge
COPY --from=build /opt/venv /opt/venv
COPY --chmod=0755 config/docker/entrypoint.sh /usr/local/bin/dbevent-bridge-entrypoint
COPY --chmod=0644 config/docker/healthcheck.py /usr/local/lib/dbevent-bridge/healthcheck.py
VOLUME ["/var/lib/dbevent-bridge"]
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "/usr/local/lib/dbevent-bridge/healthcheck.py"]
WORKDIR /var/lib/dbevent-bridge
ENTRYPOINT ["/usr/local/bin/dbevent-bridge-entrypoint"]
CMD ["run"]
# Last, so that a new revision changes the labels and no layer.
# VERSION follows pyproject.toml (a test keeps them equal); REVISION is the
# commit and SOURCE the repository it came from, e.g.
#   --build-arg REVISION="$(git rev-parse HEAD)"
#   --build-arg SOURCE="$(git remote get-url origin)"
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE=unknown
# The same facts, readable inside the container. Also what keeps the labels
# true under buildah 1.28: it caches a LABEL on its unexpanded text (a new
# REVISION alone would get the old label), a RUN on the argument values.
RUN printf '%s\n' "version=${VERSION}" "revision=${REVISION}" "source=${SOURCE}" \
    > /usr/local/lib/dbevent-bridge/build-info
LABEL org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}"

# ---------------------------------------------------------------------------
# demo: the bridge with the simulator's client library (no Actian download).
# The same image also runs the simulator itself: `sim serve --listen ...`.
FROM base AS demo
COPY --from=simulator-client /opt/ingres /opt/ingres
USER 10001:10001

# ---------------------------------------------------------------------------
# runtime (the default target): the bridge with your Ingres client runtime.
FROM base AS runtime
COPY --from=ingres-client /opt/ingres /opt/ingres
# Fail the build, not the first start, when the client needs a shared
# library this base image lacks.
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN missing="$(LD_LIBRARY_PATH=/opt/ingres/ingres/lib ldd /opt/ingres/ingres/lib/libiiapi.1.so | grep 'not found' || true)" \
    && if [ -n "${missing}" ]; then echo "libiiapi.1.so needs libraries this image lacks:" >&2; echo "${missing}" >&2; exit 1; fi
USER 10001:10001
