# The resilience CLI and library (the llm-resilience distribution) in one image: migrations, snapshot job, metrics exporter,
# and the demo (fake providers and workers). docker-compose.yml runs every part of it.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY resilience ./resilience
# The demo is an example (public API only), run from /app by `resilience demo`.
COPY examples ./examples
RUN pip install ".[metrics]" \
    && useradd --system --uid 10001 --home-dir /app resilience

USER resilience
# Every service in docker-compose.yml gives its own command (resilience db upgrade,
# resilience snapshot --every 60, ...); alone, the image shows the CLI's help.
CMD ["resilience", "--help"]
