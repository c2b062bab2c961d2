# syntax=docker/dockerfile:1
# Shelver's image: `make image` (docker or podman) builds it as shelver:latest; see docs/deploy.md.
#
#   docker run --read-only --tmpfs /tmp -p 8000:8000 -e AWS_REGION=... shelver:latest
#
# Two stages: the build stage makes a venv with exactly requirements/app.txt; the final stage is
# debian:bookworm-slim (its Python 3.11 is the version the requirements are pinned for) with the
# interpreter and the venv (Shelver installed in it), and nothing that compiles or fetches.
FROM debian:bookworm-slim AS build
# Not pinned per package (hadolint DL3008): bookworm is the pin, and its point releases carry the
# security fixes; an exact version leaves the mirror when one lands, and the build would break.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates binutils \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/shelver/venv
COPY requirements/app.txt requirements/build.txt /tmp/
# The `ca` build secret is only for builders behind a TLS-intercepting proxy (scripts/container.py
# passes the machine's CA bundle); it never lands in a layer. Only wheels: nothing is compiled.
RUN --mount=type=secret,id=ca \
    if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi \
 && /opt/shelver/venv/bin/pip install --no-cache-dir --only-binary=:all: \
      -r /tmp/app.txt -r /tmp/build.txt
# botocore carries the models of ~440 AWS services (28 MB, most of the venv). Shelver's clients
# use s3 and sqs; the credential chain creates sts (web identity: IAM roles for service
# accounts, assume-role profiles), sso, sso-oidc and signin clients. The image test creates a
# client for each, and lists what is left.
# awscrt's wheel ships its C library with full debug information (12 MB, half of it DWARF):
# the debug sections go, the symbols stay for stack traces.
RUN find /opt/shelver/venv -name '*.so' -exec strip --strip-debug {} +
ARG BOTOCORE_SERVICES="s3 sqs sts sso sso-oidc signin"
RUN for model in /opt/shelver/venv/lib/python3.11/site-packages/botocore/data/*/; do \
      service="$(basename "${model}")"; \
      case " ${BOTOCORE_SERVICES} " in *" ${service} "*) ;; *) rm -r "${model}" ;; esac; \
    done
# Shelver itself into the venv (the `shelver` command with it), built with the venv's setuptools
# and the pinned wheel, no index; then the installers go (packaging is wheel's). pip compiles the
# bytecode: the root filesystem is read-only at run time.
COPY pyproject.toml /src/
COPY service /src/service
COPY workers /src/workers
RUN /opt/shelver/venv/bin/pip install --no-cache-dir --no-deps --no-build-isolation /src \
 && /opt/shelver/venv/bin/pip uninstall --yes pip setuptools wheel packaging
COPY gunicorn.conf.py /app/

FROM debian:bookworm-slim
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.11-minimal libpython3.11-stdlib ca-certificates \
 && ln -s python3.11 /usr/bin/python3 \
 && rm -rf /var/lib/apt/lists/* /var/cache/debconf/*-old /var/log/* \
 && groupadd --system --gid 10001 shelver \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin shelver
COPY --from=build /opt/shelver/venv /opt/shelver/venv
COPY --from=build /app /app
WORKDIR /app
ENV PATH=/opt/shelver/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    BIND=0.0.0.0:8000 \
    SHELVER_STATE_DIR=/tmp/shelver/state \
    PROMETHEUS_MULTIPROC_DIR=/tmp/shelver/metrics
USER 10001:10001
EXPOSE 8000
# Liveness, not readiness: an AWS outage must not mark the container unhealthy (docs/deploy.md).
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-m", "service.probe", "/health/live"]
CMD ["gunicorn", "-c", "gunicorn.conf.py"]
