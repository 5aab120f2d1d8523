# Multi-stage build: a static-enough release binary on a small Debian runtime, run as
# a non-root user, with the example configs under /etc/pgch.
FROM rust:1.89-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
COPY config ./config
RUN cargo build --release --locked --bin pgch

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin pgch
COPY --from=build /src/target/release/pgch /usr/local/bin/pgch
COPY config /etc/pgch
USER pgch
# In a container the metrics endpoint must listen beyond loopback to be scraped.
ENV PGCH__METRICS__LISTEN=0.0.0.0:9188
EXPOSE 9188
ENTRYPOINT ["/usr/local/bin/pgch"]
CMD ["run"]
