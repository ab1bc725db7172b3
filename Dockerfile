# auth-proxy: slim, non-root image. Build: docker build -t auth-proxy .
# The config is read from /etc/auth-proxy/config.yaml (mount it; see docker-compose.yml).
# What the proxy writes (the forward-proxy CA, the session store in sessions/) goes to
# the state volume /var/lib/auth-proxy, so the root file system may be read-only:
#   docker run --read-only --tmpfs /tmp -v auth-proxy-state:/var/lib/auth-proxy ...

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY proxy ./proxy
# Installed into a prefix of its own, copied whole into the final stage: no wheels or
# build files end up in a layer there.
RUN pip install --no-cache-dir --prefix=/install ".[speed]"

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    AUTH_PROXY_CONFIG=/etc/auth-proxy/config.yaml \
    AUTH_PROXY_STATE_DIR=/var/lib/auth-proxy
COPY --from=build /install /usr/local
# A numeric user, so Kubernetes' runAsNonRoot can verify it. Secret files must be
# readable by uid 10001 (README, Docker).
RUN groupadd --system --gid 10001 auth-proxy \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin auth-proxy \
    && mkdir -p /etc/auth-proxy /var/lib/auth-proxy \
    && chown 10001:10001 /var/lib/auth-proxy \
    && chmod 0700 /var/lib/auth-proxy
# Declared after the chown: a new volume starts as a copy of this directory, owner included.
VOLUME /var/lib/auth-proxy
USER 10001:10001
EXPOSE 8080
# `auth-proxy health` reads the same config (and AUTH_PROXY_LISTEN) as `serve`, so it
# follows the configured port; every second during start-up, then every 30 s.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --start-interval=1s --retries=3 \
    CMD ["auth-proxy", "health"]
CMD ["auth-proxy", "serve"]
