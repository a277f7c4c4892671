# HA Sync image: the sync CLI, the Dagster code server, webserver and daemon, the run pods, the dashboard.
#   k8s/set-image.sh   builds it, tags it <version>-<git sha> (immutable), pushes it and sets it in k8s/
# Runs as the unprivileged user `hasync` (uid 10001). Sync runs that must keep file owners on the NFS volumes
# (rsync -a) need root: in the cluster the run pods' user is set in one place, k8s/config/dagster-instance.yaml
# (runAsUser); elsewhere `docker run --user 0`.

# ---- build: a virtualenv, the locked dependencies first (a layer that changes only with the lock file) ----
FROM python:3.11.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 SOURCE_DATE_EPOCH=0
RUN python -m venv /opt/venv
COPY .ci/requirements.lock /src/.ci/requirements.lock
RUN /opt/venv/bin/pip install --require-virtualenv -r /src/.ci/requirements.lock
# ...then the code, without touching the dependencies (a code change rebuilds only this layer)
COPY pyproject.toml README.md /src/
COPY hasync_pipeline /src/hasync_pipeline
RUN /opt/venv/bin/pip install --require-virtualenv --no-deps /src

# ---- runtime ----------------------------------------------------------------------------------------------
FROM python:3.11.11-slim-bookworm
RUN groupadd --gid 10001 hasync \
    && useradd --uid 10001 --gid 10001 --create-home --shell /usr/sbin/nologin hasync \
    && mkdir -p /opt/dagster/home /opt/dagster/app /var/log/ha-sync \
    && chown -R hasync:hasync /opt/dagster /var/log/ha-sync
COPY --from=build /opt/venv /opt/venv
COPY workspace.yaml dagster.yaml /opt/dagster/app/
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    DAGSTER_HOME=/opt/dagster/home \
    HA_SYNC_LOG_DIR=/var/log/ha-sync
# the local instance config; in the cluster the dagster-instance ConfigMap is mounted over it
RUN cp /opt/dagster/app/dagster.yaml /opt/dagster/home/dagster.yaml
WORKDIR /opt/dagster/app
USER hasync
# no HEALTHCHECK: Kubernetes ignores it; the Deployments' probes check each server (k8s/dagster.yaml)
ENTRYPOINT ["ha-sync-entrypoint"]
# workspace.yaml here names the code location; in the cluster the webserver and daemon read the code server's
CMD ["dagster-webserver", "-w", "workspace.yaml", "-h", "0.0.0.0", "-p", "3000"]
