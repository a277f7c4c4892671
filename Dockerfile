# HA Sync image: the sync CLI, the Dagster code location (webserver, daemon, run pods) and the dashboard.
#   docker build -t 192.168.2.100:5000/ha-sync:latest .
# Runs as the unprivileged user `hasync` (uid 10001) by default. Sync runs that must preserve file owners on
# the NFS volumes (rsync -a semantics) need root: the cluster's run pods get runAsUser: 0 from
# k8s/dagster-instance.yaml; elsewhere use `docker run --user 0`.

# ---- build: a virtualenv with the package and its locked dependencies --------------------------------
FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
COPY pyproject.toml README.md /src/
COPY .ci/requirements.lock /src/.ci/requirements.lock
COPY hasync_pipeline /src/hasync_pipeline
RUN /opt/venv/bin/pip install --constraint /src/.ci/requirements.lock /src

# ---- runtime ----------------------------------------------------------------------------------------
FROM python:3.11-slim-bookworm
RUN groupadd --gid 10001 hasync && useradd --uid 10001 --gid 10001 --create-home --shell /usr/sbin/nologin hasync \
    && mkdir -p /opt/dagster/home /opt/dagster/app /var/log/ha-sync \
    && chown -R hasync:hasync /opt/dagster /var/log/ha-sync
COPY --from=build /opt/venv /opt/venv
COPY workspace.yaml dagster.yaml /opt/dagster/app/
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    DAGSTER_HOME=/opt/dagster/home \
    DAGSTER_MODULE_NAME=hasync_pipeline.definitions \
    HA_SYNC_LOG_DIR=/var/log/ha-sync
# the local instance config; in the cluster the dagster-instance ConfigMap is mounted over it
RUN cp /opt/dagster/app/dagster.yaml /opt/dagster/home/dagster.yaml
WORKDIR /opt/dagster/app
USER hasync
# the code location must load: a broken image fails here, not at the first schedule tick
HEALTHCHECK --interval=5m --timeout=60s --start-period=30s CMD ["python", "-c", "import hasync_pipeline.definitions"]
ENTRYPOINT ["ha-sync-entrypoint"]
# DAGSTER_MODULE_NAME tells every dagster command where the code is (it counts as -m: do not add -w)
CMD ["dagster-webserver", "-h", "0.0.0.0", "-p", "3000"]
