# events-hub container image.
#
#   docker build -t events-hub .
#   docker run --rm -p 8080:8080 -e EVENTS_HUB__AUTH__JWT_SECRET=change-me events-hub
#
# Configuration: /etc/events-hub/hub.toml is a copy of config/default.toml. Override single
# settings with EVENTS_HUB__SECTION__KEY environment variables, or mount your own file over it.
# See docs/operations.md.

# --- build ---------------------------------------------------------------------------------
FROM rust:1-bookworm AS builder
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin events-hub

# --- run -----------------------------------------------------------------------------------
FROM debian:bookworm-slim
RUN groupadd --gid 10001 events-hub \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin events-hub
COPY --from=builder /src/target/release/events-hub /usr/local/bin/events-hub
COPY config/default.toml /etc/events-hub/hub.toml
USER 10001:10001
EXPOSE 8080
# No HEALTHCHECK: the slim image has no curl or wget. Probe GET /healthz and GET /readyz from
# your orchestrator instead (Kubernetes httpGet probes, a load balancer health check).
# The hub handles SIGTERM itself (close frames, exit 0 within server.shutdown_grace_secs);
# give `docker stop` more than that, e.g. `docker stop -t 15`.
ENTRYPOINT ["events-hub"]
CMD ["--config", "/etc/events-hub/hub.toml"]
