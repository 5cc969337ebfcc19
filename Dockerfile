# clreg-server and the clreg CLI in a slim runtime image.
#
#   docker build -t clreg-server .
#
# Stage 1 builds release binaries with the toolchain rust-toolchain.toml pins; stage 2 is
# Debian slim with the binaries, CA certificates (S3 over TLS) and curl (the healthcheck), run
# as an unprivileged user. Data (SQLite, a local store, keys) lives in /var/lib/clreg.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p clreg-server -p clreg-cli \
 && install -D target/release/clreg-server target/release/clreg -t /out/

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/clreg --create-home clreg
COPY --from=build /out/clreg-server /out/clreg /usr/local/bin/
USER clreg
WORKDIR /var/lib/clreg
ENV CLREG_DATA_DIR=/var/lib/clreg CLREG_ADDR=0.0.0.0:8080
EXPOSE 8080
# Ready: the database and the store answer (a worker overrides this in docker-compose.yml).
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD curl -fsS http://127.0.0.1:8080/readyz || exit 1
ENTRYPOINT ["clreg-server"]
CMD ["serve"]
