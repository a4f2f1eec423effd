# syntax=docker/dockerfile:1
#
# trailkeep container image.
#
#   docker build -t trailkeep:0.1.0 .
#
# The build stage runs scripts/build-static.sh, the same script CI runs
# (scripts/ci/ops-checks.sh), so the binary in the image is the one CI built
# and smoke-tested: a fully static x86_64 executable (musl when that target is
# installed, else glibc with crt-static; the rust:bookworm image has only the
# glibc target). A static binary needs nothing from the runtime image but CA
# certificates (rustls reads the system roots) and tzdata: distroless/static
# gives exactly that, a non-root user (65532) and no shell.
# DNS: glibc's static libc.a resolves /etc/hosts and DNS without any NSS
# shared library (verified in an empty chroot, see docs/operations.md).

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
# `file` is used by build-static.sh to verify the binary is static.
RUN apt-get update \
    && apt-get install -y --no-install-recommends file=1:5.44-3 \
    && rm -rf /var/lib/apt/lists/*

# 1. Dependency layer: build every dependency against stub sources, so this
#    layer is rebuilt only when Cargo.toml or Cargo.lock change.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && RUSTFLAGS="-C target-feature=+crt-static" \
       cargo build --release --locked --target x86_64-unknown-linux-gnu --bin trailkeep \
    && rm -rf src

# 2. The real build (+ smoke test: --help, empty-root start, `check -c` on the
#    shipped Kubernetes config).
COPY src ./src
COPY scripts/build-static.sh ./scripts/build-static.sh
COPY scripts/ci/smoke-binary.sh ./scripts/ci/smoke-binary.sh
COPY deploy/k8s/base/config.toml ./deploy/k8s/base/config.toml
RUN touch src/main.rs src/lib.rs \
    && scripts/build-static.sh > /tmp/bin-path \
    && install -D -m 0755 "$(cat /tmp/bin-path)" /out/trailkeep

FROM gcr.io/distroless/static-debian12:nonroot
# checkov:skip=CKV_DOCKER_2: no HEALTHCHECK: the image has no shell or HTTP client to run one, and Kubernetes ignores it; the StatefulSet probes /healthz and /readyz over HTTP instead
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="trailkeep" \
      org.opencontainers.image.description="Keeps SaaS admin audit trails (RingCentral, Vbrick Rev, Symphony) beyond the vendors' retention limits" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="gcr.io/distroless/static-debian12:nonroot"
COPY --from=build /out/trailkeep /usr/local/bin/trailkeep
USER 65532:65532
# /metrics, /healthz, /readyz
EXPOSE 9464
# The journal volume (Kubernetes mounts a PVC here).
VOLUME ["/var/lib/trailkeep"]
ENTRYPOINT ["trailkeep"]
CMD ["run", "-c", "/etc/trailkeep/config.toml"]
