#!/usr/bin/env bash
# What the tests need beyond the project's venv (docs/testing.md): system packages from apt, and Mosquitto
# listening on 127.0.0.1:1883. `make test` and `make test-fast` run this first; it is quick when all is there.
# As root it installs what is missing with apt-get; otherwise it prints the exact command and exits 1.
set -euo pipefail
cd "$(dirname "$0")/.."

BROKER_HOST=127.0.0.1
BROKER_PORT=1883

have() { command -v "$1" >/dev/null 2>&1 || [[ -x "/usr/sbin/$1" || -x "/usr/bin/$1" ]]; }

missing=()
have chromium || missing+=(chromium)                       # browser tests (Playwright drives /usr/bin/chromium)
have mosquitto || missing+=(mosquitto)                     # broker tests, private brokers, mosquitto_passwd
have mosquitto_pub || missing+=(mosquitto-clients)         # ingest tests publish with mosquitto_pub
have node || missing+=(nodejs)                             # MicroPython tests (WebAssembly port under Node.js)
have npm || missing+=(npm)                                 # installs that port (tools/micropython)
have openssl || missing+=(openssl)                         # TLS test certificates
have gcc || missing+=(gcc)                                 # bench/publisher.c, run by tests/test_bench.py
[[ -f /usr/include/mosquitto.h ]] || missing+=(libmosquitto-dev)
if [[ ! -x .venv/bin/python ]] && ! "${PYTHON:-python3}" -c "import ensurepip, venv" 2>/dev/null; then
  missing+=(python3-venv)                                  # `make install` creates .venv
fi

if ((${#missing[@]})); then
  if [[ $(id -u) -eq 0 ]]; then
    echo "test set-up: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "test set-up: missing system packages; run this, then make test again:" >&2
    echo "  sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
fi

listening() { (exec 3<>"/dev/tcp/$BROKER_HOST/$BROKER_PORT") 2>/dev/null; }

if ! listening; then
  # Most machines run Mosquitto as a service; where none listens, start one just for the tests.
  conf="${TMPDIR:-/tmp}/thermolog-test-mosquitto.conf"
  printf 'listener %s %s\nallow_anonymous true\npersistence false\n' "$BROKER_PORT" "$BROKER_HOST" >"$conf"
  mosquitto_bin=$(command -v mosquitto || echo /usr/sbin/mosquitto)
  echo "test set-up: starting Mosquitto on $BROKER_HOST:$BROKER_PORT ($conf)"
  "$mosquitto_bin" -d -c "$conf"
  for _ in $(seq 50); do listening && break; sleep 0.1; done
  if ! listening; then
    echo "test set-up: Mosquitto did not start on $BROKER_HOST:$BROKER_PORT" >&2
    exit 1
  fi
fi

# The lake tests use PostgreSQL on 127.0.0.1:5432 (trust auth for local TCP, user postgres): one fresh database per
# test. Machines that have the server installed but stopped get it started; others are told what to set up.
pg_listening() { (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; }
if ! pg_listening; then
  if command -v pg_ctlcluster >/dev/null 2>&1 && [[ $(id -u) -eq 0 ]] && ls /etc/postgresql >/dev/null 2>&1; then
    echo "test set-up: starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start
  fi
  if ! pg_listening; then
    echo "test set-up: PostgreSQL is not listening on 127.0.0.1:5432; the lake tests need it. Install and start" >&2
    echo "  it (Debian: sudo apt-get install -y postgresql), with trust auth for user postgres on 127.0.0.1" >&2
    echo "  (pg_hba.conf: 'host all postgres 127.0.0.1/32 trust'), then make test again." >&2
    exit 1
  fi
fi
