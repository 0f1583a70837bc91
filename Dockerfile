# facepair: release build with the committed sqlx offline data, slim non-root runtime.
#   docker build -t facepair .
#   docker run --rm --env-file facepair.env facepair migrate
#   docker run -p 8080:8080 --env-file facepair.env facepair
# (facepair.env: see facepair.env.example.) CI builds the build stage without a container
# engine by reading this file (scripts/docker-context-build): keep its COPY lines plain.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY .sqlx .sqlx
COPY migrations migrations
COPY src src
# a workspace member: cargo reads it to resolve the workspace, and builds none of it here
COPY bench bench
ENV SQLX_OFFLINE=true
RUN cargo build --release --locked -p facepair --bin facepair

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin facepair
COPY --from=build /src/target/release/facepair /usr/local/bin/facepair
USER 10001
ENV FACEPAIR_LISTEN=0.0.0.0:8080
EXPOSE 8080
# ready = serving and PostgreSQL reachable; on the port FACEPAIR_LISTEN names, should it change
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD curl -fsS "http://127.0.0.1:${FACEPAIR_LISTEN##*:}/health/ready" || exit 1
ENTRYPOINT ["facepair"]
CMD ["serve"]
