# leadscore worker image (`leadscore worker`), used by docker-compose.yml.
#   docker build -t leadscore .
#   docker run --rm -e LEADSCORE_KAFKA_BOOTSTRAP_SERVERS=... -e LEADSCORE_REDIS_URL=... leadscore
# Stage 1: the native core (native/, Rust + PyO3) as a wheel for CPython 3.11.
FROM rust:1-slim-bookworm AS native
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/maturin \
    && /opt/maturin/bin/pip install --no-cache-dir "maturin>=1.7,<2"
COPY native /src/native
RUN /opt/maturin/bin/maturin build --release --manifest-path /src/native/Cargo.toml \
        --interpreter python3 --out /wheels

# Stage 2: the worker.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# Only what the package needs (see .dockerignore); README.md* so the build works without it.
COPY pyproject.toml README.md* ./
COPY schemas ./schemas
COPY scoring ./scoring
COPY streams ./streams
COPY --from=native /wheels /wheels
RUN pip install /wheels/*.whl . \
    && mkdir -p /etc/leadscore \
    && cp scoring/default_rules.yaml /etc/leadscore/rules.yaml \
    && useradd --system --uid 10001 --create-home --home-dir /home/leadscore leadscore

USER leadscore
WORKDIR /home/leadscore

# /healthz and /metrics (faust web server); bind all interfaces inside the container.
ENV LEADSCORE_WEB_HOST=0.0.0.0 \
    LEADSCORE_WEB_PORT=6066 \
    LEADSCORE_RULES_FILE=/etc/leadscore/rules.yaml
EXPOSE 6066

CMD ["leadscore", "worker"]
