# syntax=docker/dockerfile:1.7
#
# One image with all three binaries (api_service, quote_service, fake_stooq); compose picks
# the program with `command:`. Per-program targets exist too:
#   docker build --target quote_service -t stock-quotes/quote_service .
#   docker build --target api_service   -t stock-quotes/api_service .
# The default (last) target is `runtime`, which runs `api_service serve`.
#
# Needs BuildKit (the default builder since Docker 23): the cargo registry and target dir
# live in cache mounts, so a source change rebuilds only the workspace crates, not every
# dependency. That is the dependency-caching layer, without dummy-source tricks that break
# whenever a crate gains a target.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS builder
WORKDIR /src
# The slim image already has gcc and libc headers, enough for the C in aws-lc-sys and the
# bundled SQLite; TLS is rustls, so no OpenSSL headers are needed. The `dist` profile
# (Cargo.toml) is the release build with its line tables stripped.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --profile dist --locked \
        --bin api_service --bin quote_service --bin fake_stooq \
 && mkdir -p /out \
 && cp target/dist/api_service target/dist/quote_service target/dist/fake_stooq /out/

FROM debian:${DEBIAN_RELEASE}-slim AS base
# ca-certificates: HTTPS to stooq.com. curl: container healthchecks (`curl -fsS .../healthz`).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*
# A fixed non-root uid/gid so volume ownership is predictable across rebuilds.
# /run/quote-secrets: compose's `init-secrets` writes the generated JWT key there. Docker
# gives a new named volume the owner and mode of the image directory it is mounted over, so
# creating it here (owned by app, 0700) is what lets the non-root user write it and nobody
# else read it.
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin app \
 && mkdir -p /data /run/quote-secrets \
 && chown app:app /data /run/quote-secrets \
 && chmod 0700 /run/quote-secrets
COPY --from=builder /out/ /usr/local/bin/
# /data holds the SQLite database when DATABASE_URL is left at sqlite://api_service.db. No
# VOLUME here: it would give every container (the one-shot ones too, and every one on
# PostgreSQL) an anonymous volume that `docker compose down` leaves behind. Storage is
# declared where SQLite is used: `docker run -v stock-quotes-data:/data ...`, or a named
# volume in compose.
WORKDIR /data
USER app:app
ENV RUST_LOG=info
# 8000 api_service, 8001 quote_service, 8002 fake_stooq.
EXPOSE 8000 8001 8002

FROM base AS quote_service
CMD ["quote_service"]

FROM base AS api_service
CMD ["api_service", "serve"]

FROM base AS fake_stooq
ENV FAKE_STOOQ_ADDR=0.0.0.0:8002
CMD ["fake_stooq"]

FROM base AS runtime
CMD ["api_service", "serve"]
