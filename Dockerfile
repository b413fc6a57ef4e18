# pinpipe image: `docker build -t pinpipe .` (the k8s manifests expect it as
# ghcr.io/example/pinpipe:<version>; set yours with `kustomize edit set image`).
# Build stage: the same toolchain as CI; system packages for librdkafka (C, TLS, zlib).
FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends pkg-config libssl-dev zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies first, so a source change does not rebuild deltalake and librdkafka.
COPY Cargo.toml Cargo.lock rustfmt.toml ./
RUN mkdir -p src benches \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && for b in pipeline kafka; do echo 'fn main() {}' > benches/$b.rs; done \
 && cargo build --release --locked \
 && rm -rf src benches
COPY src src
COPY benches benches
# Touch so cargo sees the real sources as newer than the dependency-only build.
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin pinpipe

# Runtime: glibc, CA certificates (S3, MSK TLS) and OpenSSL for librdkafka.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 zlib1g \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/pinpipe /usr/local/bin/pinpipe
# Non-root (matches the manifests' runAsUser); /tmp is the only writable path needed.
USER 65532:65532
WORKDIR /tmp
EXPOSE 9898
ENTRYPOINT ["pinpipe"]
CMD ["run", "--no-progress"]
