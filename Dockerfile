# syntax=docker/dockerfile:1
# One image for the three Shoal services; the command picks the service:
#   scheduler  python -m shoal.scheduler --host 0.0.0.0 --port 8000   (the default; uvicorn with timeouts)
#   worker     python -m shoal.worker                                       (probes/metrics on 9100)
#   dashboard  streamlit run streamlit_app.py --server.port 8501 --server.address 0.0.0.0 --server.headless true
# Build: docker build -t shoal:0.1.0 .

# The base image by digest, so a rebuild gets the same bytes whatever the tag points at now.
# Refresh (docs/kubernetes.md, "Updating pinned versions"):
#   docker buildx imagetools inspect python:3.11-slim --format '{{json .Manifest.Digest}}'
ARG PYTHON_IMAGE=python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7

# Build stage: a virtualenv with the pinned runtime dependencies (all have binary wheels) and the
# application, byte-compiled so the read-only root filesystem never needs a .pyc write.
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY requirements.lock /tmp/requirements.lock
RUN pip install --no-cache-dir --only-binary=:all: --require-hashes -r /tmp/requirements.lock
WORKDIR /app
COPY pyproject.toml ./
COPY services/ services/
RUN pip install --no-cache-dir --no-deps . && rm -rf /app/services /app/pyproject.toml
COPY streamlit_app.py ./
COPY .streamlit/config.toml .streamlit/config.toml
RUN python -m compileall -q /app/streamlit_app.py

# Final stage: the slim base, the virtualenv and the app; no compilers, no pip cache, not root.
FROM ${PYTHON_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    SHOAL_LOG_FORMAT=json
RUN groupadd --system --gid 10001 shoal \
 && useradd --system --uid 10001 --gid shoal --home-dir /tmp --no-create-home --shell /usr/sbin/nologin shoal
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app
WORKDIR /app
USER 10001:10001
EXPOSE 8000 8501 9100
CMD ["python", "-m", "shoal.scheduler", "--host", "0.0.0.0", "--port", "8000"]
