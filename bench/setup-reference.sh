#!/usr/bin/env bash
# Create bench/.venv-ref with the official LangGraph dev server (langgraph-cli[inmem]).
# That code is Elastic-licensed: it lives only in this gitignored venv and is never imported
# by agentd or by the repo's own virtualenv. Safe to re-run.
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$BENCH_DIR/.venv-ref"
PYTHON="${PYTHON:-python3}"

if [[ ! -x "$VENV/bin/python" ]]; then
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/pip" install --quiet --upgrade pip
# langgraph-cli[inmem] pulls langgraph-api and langgraph-runtime-inmem (and langgraph itself,
# which is all the bench graphs need).
"$VENV/bin/pip" install --quiet "langgraph-cli[inmem]" "langgraph"
"$VENV/bin/langgraph" --version
echo "reference server installed in $VENV"
