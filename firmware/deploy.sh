#!/usr/bin/env bash
# Copy the firmware onto a board that already runs MicroPython (see docs/firmware.md).
#
#   firmware/deploy.sh [--mpy] PORT CONFIG_JSON [CA_DER]
#
# PORT is the serial device (e.g. /dev/ttyACM0). CONFIG_JSON becomes :config.json and CA_DER (the broker's CA in
# DER form) :ca.der. thermolog/control.py, the control logic shared with the rest of thermolog, goes on as
# :control.py. --mpy copies modules compiled with mpy-cross instead of sources (less RAM at import); boot.py and
# main.py always go as sources, since the board runs them by name. MPREMOTE and MPY_CROSS override the tools.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
MPREMOTE="${MPREMOTE:-mpremote}"
MPY_CROSS="${MPY_CROSS:-mpy-cross}"

# Every module the board runs; firmware/simhw.py and firmware/host_run.py are for the PC only.
MODULES="board device config contract clock ringbuf sensors outputs lcd wifi mqttlink ha store"

compile=0
if [[ "${1:-}" == "--mpy" ]]; then
  compile=1
  shift
fi
if [[ $# -lt 2 || $# -gt 3 ]]; then
  sed -n '4,9p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
fi
port="$1"
config="$2"
ca="${3:-}"
[[ -f "$config" ]] || { echo "deploy.sh: no such config file: $config" >&2; exit 2; }
[[ -z "$ca" || -f "$ca" ]] || { echo "deploy.sh: no such CA file: $ca" >&2; exit 2; }

staging="$(mktemp -d)"
trap 'rm -rf "$staging"' EXIT
cp "$root/thermolog/control.py" "$staging/control.py"
for module in $MODULES; do
  cp "$here/$module.py" "$staging/$module.py"
done
files=("$here/boot.py" "$here/main.py")
for module in control $MODULES; do
  if ((compile)); then
    "$MPY_CROSS" -o "$staging/$module.mpy" "$staging/$module.py"
    files+=("$staging/$module.mpy")
  else
    files+=("$staging/$module.py")
  fi
done
cp "$config" "$staging/config.json"
files+=("$staging/config.json")
if [[ -n "$ca" ]]; then
  cp "$ca" "$staging/ca.der"
  files+=("$staging/ca.der")
fi

"$MPREMOTE" connect "$port" mip install umqtt.simple
"$MPREMOTE" connect "$port" cp "${files[@]}" :
"$MPREMOTE" connect "$port" reset
echo "deployed ${#files[@]} files to $port; watch it with: $MPREMOTE connect $port repl"
