# syntax=docker/dockerfile:1
# One image for every Tessera component. The component is chosen by the module
# given to `python -m` (the chart sets it per Deployment):
#   docker run tessera:dev tessera.zone        (the default)
#   docker run tessera:dev tessera.auth | tessera.matchmaking | tessera.relay | tessera.operator
#                          | tessera.console
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- builder: dependencies into a venv, generated protobuf code -------------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY locks/ locks/
# Runtime dependencies only, exactly as locked (versions and hashes; `make lock`).
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --require-hashes --no-deps -r locks/runtime.txt
# Code generation runs in its own venv (the dev lock: same versions as `make
# protos`), which the final stage never sees.
COPY scripts/gen_protos.sh scripts/
COPY protos/tessera/ protos/tessera/
RUN python -m venv /opt/protoc \
 && /opt/protoc/bin/pip install --require-hashes --no-deps -r locks/dev.txt \
 && bash scripts/gen_protos.sh /opt/protoc/bin/python protos protos/gen
COPY wire/ wire/
COPY services/ services/
COPY operator/ operator/
COPY sdk/ sdk/
RUN /opt/venv/bin/python -m compileall -q wire services operator sdk protos/gen

# --- final: the venv and the source roots, no compilers, no pip caches, non-root --
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="tessera" \
      org.opencontainers.image.description="Tessera: kopf operator, zone, auth, matchmaking and relay services, web console" \
      org.opencontainers.image.licenses="Apache-2.0" \
      io.tessera.entrypoints="tessera.operator tessera.zone tessera.auth tessera.matchmaking tessera.relay tessera.console"
RUN groupadd --system --gid 10001 tessera \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin tessera
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /src/wire /app/wire
COPY --from=builder /src/services /app/services
COPY --from=builder /src/operator /app/operator
COPY --from=builder /src/sdk /app/sdk
COPY --from=builder /src/protos/gen /app/protos/gen
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app/wire:/app/services:/app/operator:/app/sdk:/app/protos/gen \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    NUMBA_CACHE_DIR=/app/numba-cache
WORKDIR /app
# The zone's compiled kernels, warmed at build time (docs/ZONE.md "Compiled kernels"):
# a zone on a CPU like the builder's loads them in ~0.2 s instead of compiling.
RUN python -m tessera.zone.jitcache && chown -R 10001:10001 /app/numba-cache
USER 10001:10001
# gRPC, Prometheus /metrics, relay UDP, console HTTP.
EXPOSE 50051 9090 7777/udp 8080
ENTRYPOINT ["python", "-m"]
CMD ["tessera.zone"]
