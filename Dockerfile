# syntax=docker/dockerfile:1
# Multi-stage build of the inkan binary; the runtime image runs as a
# non-root user with the configuration mounted from outside.

FROM rust:1.89-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p inkan \
 && strip target/release/inkan

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/inkan --create-home inkan
COPY --from=build /src/target/release/inkan /usr/local/bin/inkan
USER inkan
WORKDIR /var/lib/inkan
VOLUME ["/var/lib/inkan"]
# Listen on all interfaces inside the container; publish the port from outside.
ENV INKAN_LISTEN=0.0.0.0:8090 \
    INKAN_LEDGER_DIR=/var/lib/inkan/ledger
EXPOSE 8090
ENTRYPOINT ["/usr/local/bin/inkan"]
CMD ["serve", "--config", "/etc/inkan/inkan.toml"]
