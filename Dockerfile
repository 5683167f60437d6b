# Image for the api and worker services of docker-compose.yml.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY . .
RUN pip install --no-cache-dir -e .
ENV CUSTODY_LOG_JSON=true
EXPOSE 8000 9464
CMD ["python", "worker.py"]
