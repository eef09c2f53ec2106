# qinglang (清朗): the moderation bot, its CLI and the default model, in one image.
#
#   docker build -t qinglang .
#   docker run -d --name qinglang -e QINGLANG_TELEGRAM_TOKEN=... -v qinglang-data:/data qinglang
#
# Runs `qinglang run` (long polling) as an unprivileged user. The SQLite database, the evidence spool and
# any model you train live in the /data volume; /metrics and /healthz answer on port 9108.
# With PostgreSQL, see docker-compose.yml.

# --- build: the package and its dependencies in a virtual environment --------------------------------
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# A C compiler for the classifier's compiled scorer (classifier/_native.c); this stage only: the image
# that runs gets the built venv, no compiler.
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/qinglang
WORKDIR /src
# Everything the package is built from (see .dockerignore): metadata, then the three packages.
# classifier/default_model/ is package data, so the default model goes into the image with the code.
COPY pyproject.toml README.md setup.py ./
COPY bot ./bot
COPY classifier ./classifier
COPY storage ./storage
RUN /opt/qinglang/bin/pip install '.[postgres]'
# The extension is optional for pip (a machine without a compiler still installs the package); the image
# must have it, so a failed compile fails the build here instead of halving the classifier's speed.
RUN /opt/qinglang/bin/python -c "import classifier._native"

# --- run: the virtual environment only, no sources, no build leftovers -------------------------------
FROM python:3.11-slim
LABEL org.opencontainers.image.title="qinglang" \
      org.opencontainers.image.description="清朗: moderation bot for Chinese-language Telegram groups" \
      org.opencontainers.image.licenses="MIT"

RUN useradd --system --uid 10001 --user-group --home-dir /data --no-create-home qinglang \
    && mkdir -p /data \
    && chown qinglang:qinglang /data \
    && chmod 700 /data
COPY --from=build /opt/qinglang /opt/qinglang

ENV PATH=/opt/qinglang/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    QINGLANG_DATABASE_URL=sqlite+aiosqlite:////data/qinglang.db \
    QINGLANG_SPOOL_DIR=/data/spool \
    QINGLANG_METRICS_HOST=0.0.0.0 \
    QINGLANG_METRICS_PORT=9108

USER qinglang
WORKDIR /data
# Fail the build, not the first start, if the default model did not make it into the package.
RUN python -c "import classifier; print('default model', classifier.load().version)"
VOLUME ["/data"]
EXPOSE 9108

# slim has no curl: urllib it is. A 503 (database not answering) raises, so the check fails.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('QINGLANG_METRICS_PORT', '9108'), timeout=4)"]

ENTRYPOINT ["qinglang"]
CMD ["run"]
