#!/usr/bin/env bash
# `make run`: LocalStack (host mode) + the resources of serverless.yml + gunicorn, all on 127.0.0.1.
# Ctrl-C or SIGTERM stops gunicorn, then the emulator if this script started it (one that was
# already running, e.g. from `make emulator`, is left running).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

port=${LOCALSTACK_PORT:-4566}
bind=${BIND:-127.0.0.1:8000}
py=.venv/bin/python
pid_file=.run/localstack.pid

started_emulator=0
gunicorn_pid=""

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  # Ctrl-C may have killed whatever reads our output (a pager, tee): keep going regardless.
  trap '' PIPE
  if [[ -n $gunicorn_pid ]] && kill -0 "$gunicorn_pid" 2>/dev/null; then
    kill -TERM "$gunicorn_pid" 2>/dev/null || true
    wait "$gunicorn_pid" 2>/dev/null || true
  fi
  if ((started_emulator)); then
    "$py" scripts/emulator.py down --pid-file "$pid_file" || true
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if "$py" scripts/emulator.py status --port "$port" >/dev/null; then
  echo "run-local: using the LocalStack already running on 127.0.0.1:$port" >&2
else
  started_emulator=1
  "$py" scripts/emulator.py up --port "$port" --data-dir .run/localstack --pid-file "$pid_file" >/dev/null
fi
"$py" scripts/emulator.py deploy --stage local --port "$port"

export AWS_ENDPOINT_URL="http://127.0.0.1:$port" AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test BIND="$bind"

# In the background so the traps above run as soon as a signal arrives, not after gunicorn exits.
.venv/bin/gunicorn -c gunicorn.conf.py --bind "$bind" &
gunicorn_pid=$!
wait "$gunicorn_pid"
