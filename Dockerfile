# perfproxy: multi-stage build, small non-root runtime image.
#   docker build -t perfproxy .
#   docker run -p 4001:4001 -e PERFPROXY_UPSTREAM=http://backend:3000 perfproxy
FROM rust:1-slim-bookworm AS build
WORKDIR /src
# Dependencies in their own layer: rebuilt only when Cargo.toml/Cargo.lock change.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && cargo build --release --locked --bin perfproxy && rm -rf src
COPY src ./src
COPY migrations ./migrations
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin perfproxy \
    && strip target/release/perfproxy

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home perfproxy
COPY --from=build /src/target/release/perfproxy /usr/local/bin/perfproxy
# A minimal config (the defaults); the example with its sample rules stays in config/.
COPY config/container.toml /etc/perfproxy/perfproxy.toml
COPY migrations /usr/share/perfproxy/migrations
USER 10001
ENV PERFPROXY_LISTEN=0.0.0.0:4001 PERFPROXY_CONFIG=/etc/perfproxy/perfproxy.toml
EXPOSE 4001
HEALTHCHECK --interval=10s --timeout=2s --retries=3 CMD curl -fsS http://127.0.0.1:4001/health/live || exit 1
ENTRYPOINT ["/usr/local/bin/perfproxy"]
