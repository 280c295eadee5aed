# The platform's Python services: the APIs, the projector, the relay and `migrate` (the
# default target, `platform`), and the Dagster webserver, daemon, run workers and
# Kubernetes user code server (the `dagster` target: the same image plus Dagster's run
# launchers). Dependencies are installed with the same constraints as `make`.
# No secret is built in: passwords and URLs come from the environment at run time
# (docker-compose.yml, from .env; Kubernetes, from the warriors-secrets Secret), and the
# COPY lines below name what goes into the image, so `.env` never does.
FROM python:3.11-slim AS platform

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

COPY pyproject.toml constraints.txt README.md ./
COPY warriors ./warriors
COPY api ./api
COPY orchestration ./orchestration
COPY sql ./sql
COPY workspace.yaml ./
COPY dagster.yaml ./dagster-home/dagster.yaml
# A fixed uid (10001, outside the system range), not the next free one: compose's
# Prometheus runs as this uid to read the 0600 scrape key that `migrate` (this user)
# writes into the `metrics-key` volume at /keys, and Kubernetes' runAsUser names it. /keys
# exists here, owned by this user, because an empty named volume takes the owner and
# mode of the image's folder it is mounted on (else root's, and `warriors keys
# ensure-file` could not write there).
RUN pip install -c constraints.txt . \
    && useradd --system --uid 10001 --no-create-home warriors \
    && chown -R warriors /app/dagster-home \
    && install -d -o warriors -m 0700 /keys
USER 10001

# 0.0.0.0 inside the container, which the port mapping needs; compose publishes it on
# the host's loopback only.
EXPOSE 8000
# The API's role cannot migrate: compose's one-shot `migrate` service does it as the owner.
CMD ["sh", "-c", "exec uvicorn api.gateway:create_app --factory --host 0.0.0.0 --port 8000 --workers ${HTTP_WORKERS:-2} --no-access-log"]


# Dagster's image (compose: dagster-webserver, dagster-daemon and every run container
# they launch; Kubernetes: the user code deployment and its run pods). The run launchers
# belong to the Dagster family, released together with the dagster 1.13.27 pinned in
# pyproject.toml: dagster-docker (compose's DockerRunLauncher, deploy/dagster/dagster.yaml)
# and dagster-k8s (the Helm chart's K8sRunLauncher, deploy/k8s/dagster-values.yaml; the
# chart requires it in the user code image). Installed in this image only: the `deploy`
# extra of pyproject.toml, pinned with its transitive packages in constraints.txt.
FROM platform AS dagster
USER root
RUN pip install -c constraints.txt '.[deploy]' \
    && install -d -o warriors -m 0750 /app/dagster-home/storage /app/analytics
USER 10001


# The default target (`docker build .`, compose's `build: .`): the platform image.
FROM platform
