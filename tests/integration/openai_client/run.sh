#!/usr/bin/env bash
# The official `openai` Python client against a running expertd, over its
# Unix socket (an httpx transport on the socket path): what OpenAI's own
# clients send and parse, not what our C++ client does.
#   run.sh EXPERTD_BINARY MODEL_DIR VENV_DIR
# Installs `openai` from PyPI into VENV_DIR (once) with the python3 on the
# PATH. Exit 77 (ctest's skip) when no virtual environment or package can be
# had: the machine has no PyPI; any failure after that fails the test.
set -euo pipefail
expertd="$1"
model="$2"
venv="$3"
here="$(cd "$(dirname "$0")" && pwd)"

if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c "import openai, httpx" 2>/dev/null; then
  python3 -m venv "$venv" || { echo "openai_client: cannot make a virtual environment; skipped" >&2; exit 77; }
  "$venv/bin/pip" install -q "openai>=1.40,<3" || { echo "openai_client: cannot install openai from PyPI; skipped" >&2; exit 77; }
fi

work="$(mktemp -d)"
daemon_pid=""
cleanup() {
  [[ -n "$daemon_pid" ]] && kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
socket="$work/expertd.sock"
cat > "$work/expertd.toml" <<TOML
[server]
socket_path = "$socket"
[model]
path = "$model"
[inference]
max_tokens = 256
[device]
gpu = "off"
TOML
"$expertd" serve --config "$work/expertd.toml" 2> "$work/daemon.log" &
daemon_pid=$!
for _ in $(seq 1 300); do
  [[ -S "$socket" ]] && break
  kill -0 "$daemon_pid" 2>/dev/null || { cat "$work/daemon.log" >&2; exit 1; }
  sleep 0.05
done
EXPERTD_SOCKET="$socket" "$venv/bin/python" "$here/openai_client_test.py" -v ||
  { echo "--- daemon log" >&2; tail -n 40 "$work/daemon.log" >&2; exit 1; }
