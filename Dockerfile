# pinpipe image: `docker build -t pinpipe .` (the k8s manifests expect it as
# ghcr.io/example/pinpipe:<version>; set yours with `kustomize edit set image`).
# Build stage: the same toolchain as CI; system packages for librdkafka (C, TLS, zlib).
FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends pkg-config libssl-dev zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The `dist` profile (Cargo.toml): stripped, no debug info, thin LTO, one codegen unit per
# crate. Incremental builds are useless in a one-off build. (Panic messages still name
# file:line.)
ENV CARGO_INCREMENTAL=0
# Dependencies first, so a source change does not rebuild deltalake and librdkafka.
COPY Cargo.toml Cargo.lock rustfmt.toml ./
RUN mkdir -p src benches \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && for b in pipeline kafka; do echo 'fn main() {}' > benches/$b.rs; done \
 && cargo build --profile dist --locked \
 && rm -rf src benches
COPY src src
COPY benches benches
# Touch so cargo sees the real sources as newer than the dependency-only build.
RUN touch src/main.rs src/lib.rs && cargo build --profile dist --locked --bin pinpipe

# Runtime: glibc, CA certificates (S3, MSK TLS) and OpenSSL for librdkafka.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 zlib1g \
 && rm -rf /var/lib/apt/lists/*
# A named non-root user (logs and tools show a name; HOME for the AWS SDK's profile
# lookup). USER stays numeric so Kubernetes' runAsNonRoot can verify it, and matches the
# manifests' runAsUser/runAsGroup. /tmp is the only writable path pinpipe needs.
RUN groupadd --system --gid 65532 pinpipe \
 && useradd --system --uid 65532 --gid 65532 --home-dir /tmp --no-create-home \
      --shell /usr/sbin/nologin pinpipe
COPY --from=build /src/target/dist/pinpipe /usr/local/bin/pinpipe
USER 65532:65532
WORKDIR /tmp
EXPOSE 9898
ENTRYPOINT ["pinpipe"]
CMD ["run", "--no-progress"]
