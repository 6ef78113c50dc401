# syntax=docker/dockerfile:1
#
# cairn-server (and the `cairn` CLI) in a small Debian image.
#
#   docker build -t cairn-server .
#   docker run -p 8000:8000 -p 8443:8443/udp -v cairn-data:/data cairn-server
#
# With no other setting the container is a complete server on SQLite and a local block store
# in /data. For several instances sharing PostgreSQL, Redis, RabbitMQ and S3-compatible storage
# see docker-compose.yml.

# --- build -------------------------------------------------------------------------------------
FROM rust:1.95-bookworm AS builder

# C toolchain is in the image; pkg-config and cmake for -sys crates' build scripts.
RUN apt-get update \
 && apt-get install -y --no-install-recommends pkg-config cmake \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY . .

# The registry and target caches survive between builds (BuildKit); the binaries are copied out
# of the cached target directory because a cache mount is not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p cairn-server -p cairn-cli \
 && mkdir -p /out \
 && cp target/release/cairn-server target/release/cairn /out/

# --- runtime -----------------------------------------------------------------------------------
FROM debian:bookworm-slim

# ca-certificates: TLS to S3 / managed databases; curl: the health check.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 cairn \
 && useradd --system --uid 10001 --gid cairn --home-dir /data --shell /usr/sbin/nologin cairn \
 && mkdir -p /data \
 && chown cairn:cairn /data

COPY --from=builder /out/cairn-server /out/cairn /usr/local/bin/

# Listen on every interface inside the container; the data dir holds the SQLite database (when
# DATABASE_URL is not set), the local block store (when CAIRN_S3_URL is not set), the generated
# JWT secret (when JWT_SECRET is not set) and the generated QUIC certificate.
ENV CAIRN_LISTEN=0.0.0.0:8000 \
    CAIRN_QUIC_LISTEN=0.0.0.0:8443 \
    CAIRN_DATA_DIR=/data

USER cairn
VOLUME ["/data"]
WORKDIR /data
EXPOSE 8000/tcp 8443/udp

# Liveness: /live answers while the process serves requests, whatever its dependencies do
# (/ready and /health report those; docker-compose.yml checks /ready). The port follows
# CAIRN_LISTEN.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD curl -fsS -o /dev/null "http://127.0.0.1:${CAIRN_LISTEN##*:}/live" || exit 1

ENTRYPOINT ["cairn-server"]
