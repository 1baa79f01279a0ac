# aigw's container image: `docker build -t aigw:0.1.0 .` (see docs/deploy.md).
#
# Two stages. The builder compiles the release binary with the toolchain on Debian bookworm; the
# runtime is distroless/cc: the binary links glibc, libm and libgcc_s only
# (`ldd target/release/aigw`), and TLS verification reads the system CA certificates, all of
# which that image holds. The builder must stay on bookworm (glibc 2.36) so that the binary
# runs on the bookworm-based runtime: `rust:1` alone follows Debian's newest release.
#
# The image runs as 65532:65532 and writes nothing (logs go to stderr), so it runs with a
# read-only root filesystem and needs no writable volume, not even /tmp.

FROM rust:1-bookworm AS build
WORKDIR /src

# Dependencies first, in their own layer: it is rebuilt only when Cargo.toml or Cargo.lock
# change. `benches/` is copied because Cargo.toml declares [[bench]] targets, and cargo refuses
# a manifest whose declared targets are missing (benches are not built here).
COPY Cargo.toml Cargo.lock ./
COPY benches benches
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src target/release/.fingerprint/aigw-* target/release/deps/aigw-* \
        target/release/deps/libaigw-* target/release/aigw

# The crate itself. The placeholder's fingerprints are gone, so cargo rebuilds aigw whatever
# the copied files' timestamps say. /etc/aigw/policy.yaml gets the built-in policy (what
# `aigw init` writes) so that the image starts without a mount; Kubernetes mounts its ConfigMap
# over /etc/aigw.
COPY src src
RUN cargo build --release --locked \
    && install -D -m 0755 target/release/aigw /out/usr/local/bin/aigw \
    && mkdir -p /out/etc/aigw \
    && /out/usr/local/bin/aigw init /out/etc/aigw/policy.yaml \
    && chmod 0644 /out/etc/aigw/policy.yaml

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="aigw" \
      org.opencontainers.image.description="AI gateway: ngrok ai-gateway policies served locally, with failover" \
      org.opencontainers.image.licenses="MIT OR Apache-2.0"
COPY --from=build /out/ /
USER 65532:65532
EXPOSE 8080
# A non-loopback --listen needs a token: pass AIGW_AUTH_TOKEN (docker run -e AIGW_AUTH_TOKEN=…).
# SIGTERM drains for --drain-timeout (30s by default): stop with `docker stop -t 35`.
ENTRYPOINT ["aigw"]
CMD ["serve", "--listen", "0.0.0.0:8080", "--policy", "/etc/aigw/policy.yaml"]
