# LocalStack for compose.yaml, built from the same pinned localstack-core the tests run (host
# mode, Python 3.13, requirements/localstack.txt): no auth token, no Docker socket.
FROM python:3.13-slim-bookworm
RUN useradd --system --uid 10002 --create-home localstack
COPY requirements/localstack.txt /tmp/localstack.txt
RUN pip install --no-cache-dir -r /tmp/localstack.txt
# LocalStack's runtime with the fix to its FIFO model that the tests run with (see the script).
COPY scripts/localstack_runtime.py /opt/localstack_runtime.py
USER localstack
WORKDIR /home/localstack
ENV GATEWAY_LISTEN=0.0.0.0:4566 \
    LOCALSTACK_HOST=localstack:4566 \
    SQS_ENDPOINT_STRATEGY=off \
    SERVICES=sqs,s3,cloudformation,sts,iam,kms \
    EAGER_SERVICE_LOADING=1 \
    DNS_ADDRESS=0 \
    DISABLE_EVENTS=1 \
    SKIP_SSL_CERT_DOWNLOAD=1 \
    LOCALSTACK_VOLUME_DIR=/home/localstack/data \
    FILESYSTEM_ROOT=/home/localstack/data \
    PYTHONUNBUFFERED=1
EXPOSE 4566
HEALTHCHECK --interval=5s --timeout=3s --start-period=20s --retries=20 CMD ["python", "-c", \
    "import json, urllib.request; s = json.load(urllib.request.urlopen('http://127.0.0.1:4566/_localstack/health'))['services']; raise SystemExit(0 if s.get('sqs') in ('available', 'running') and s.get('s3') in ('available', 'running') else 1)"]
CMD ["python", "/opt/localstack_runtime.py"]
