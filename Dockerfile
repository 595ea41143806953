# flyte-connect: the server and the example connectors in a small image.
#
#   make image          (docker or podman)
#   docker run -p 8000:8000 -p 9090:9090 flyte-connect
#
# The runtime image runs as a non-root user. Connectors are in /connectors
# (FLYTE_CONNECTOR_PATH), the compile cache in /var/cache/flyte-connect (a
# volume). `c0` is on the PATH too, so a Flyte chart whose command is `c0`
# runs unchanged.

FROM rust:1.95-bookworm AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3-venv python3-pip \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# No debug info in the shipped binary; connectors as `make connectors` builds them.
ENV CARGO_PROFILE_RELEASE_DEBUG=0 CARGO_PROFILE_RELEASE_STRIP=symbols
RUN make build connectors PYTHON=python3

FROM debian:bookworm-slim
RUN useradd --system --uid 65532 --user-group --home-dir /nonexistent --shell /usr/sbin/nologin flyte \
    && mkdir -p /connectors /var/cache/flyte-connect \
    && chown flyte:flyte /var/cache/flyte-connect
COPY --from=build /src/target/release/flyte-connect /usr/local/bin/flyte-connect
RUN ln -s flyte-connect /usr/local/bin/c0
COPY --from=build /src/connectors/ /connectors/
ENV FLYTE_CONNECTOR_PATH=/connectors \
    XDG_CACHE_HOME=/var/cache \
    RUST_LOG=info
# Compile every connector once, so a container starts from a warm cache
# (Docker copies it into a fresh named volume; an emptyDir starts cold).
RUN flyte-connect c0 --host 127.0.0.1 --port 0 --prometheus_port 0 --timeout 1 \
    && chown -R flyte:flyte /var/cache/flyte-connect
USER 65532:65532
VOLUME /var/cache/flyte-connect
EXPOSE 8000 9090
ENTRYPOINT ["flyte-connect"]
CMD ["c0"]
