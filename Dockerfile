# Image for the api, worker and devnet services of docker-compose.yml. Runs as an unprivileged
# user: nothing in custody needs root.
FROM python:3.11-slim
RUN useradd --system --create-home --uid 10001 custody
WORKDIR /app
COPY pyproject.toml README.md ./
COPY . .
# Bytecode compiled at build time: the workflow sandbox imports each workflow module per run, and
# the unprivileged user cannot write __pycache__ (core/sandbox_bytecode.py).
RUN pip install --no-cache-dir -e . && python -m compileall -q workflows && mkdir -p /data && chown custody:custody /data
ENV CUSTODY_LOG_JSON=true
USER custody
EXPOSE 8000 9464
CMD ["python", "worker.py"]
