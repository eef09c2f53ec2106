FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY classifier ./classifier
COPY storage ./storage
RUN pip install --no-cache-dir '.[postgres]'
RUN useradd --create-home --uid 10001 qinglang && mkdir -p /data && chown qinglang /data
USER qinglang
VOLUME ["/data"]
ENV QINGLANG_DATABASE_URL=sqlite+aiosqlite:////data/qinglang.db
ENTRYPOINT ["qinglang"]
CMD ["run"]
