# auth-proxy: slim, non-root image. Build: docker build -t auth-proxy .
# The config is read from /etc/auth-proxy/config.yaml (mount it; see docker-compose.yml).

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY proxy ./proxy
# Wheels for the package and its dependencies, with the `speed` extra (uvloop).
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[speed]"

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    AUTH_PROXY_CONFIG=/etc/auth-proxy/config.yaml
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index /wheels/*.whl \
    && rm -rf /wheels \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin auth-proxy \
    && mkdir -p /etc/auth-proxy
USER auth-proxy
EXPOSE 8080
# No curl in slim images: probe with the Python that is already there (bypassing any
# HTTP_PROXY the container has for its outbound calls).
HEALTHCHECK --interval=30s --timeout=3s --start-period=5s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request as u; r = u.build_opener(u.ProxyHandler({})).open('http://127.0.0.1:8080/-/healthz', timeout=2); sys.exit(r.status != 200)"]
CMD ["auth-proxy", "serve"]
