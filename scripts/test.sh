#!/usr/bin/env bash
# The test command: installs what is missing, builds, and runs the whole test suite.
#   bash scripts/test.sh            # everything
#   bash scripts/test.sh -m "not e2e"   # extra arguments go to pytest
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup_env.sh"
# The LeRobot sidecar's own environment (.venv-lerobot, Python 3.12; about 5 GB where the PyTorch CPU
# index is unreachable) installs in the background while the suite runs: it is network-bound, the suite
# CPU-bound. The tests marked `lerobot` run last and wait for it (log/setup_lerobot.status).
mkdir -p "$ROOT/log"
export HYBRIDVLA_LEROBOT_STATUS="$ROOT/log/setup_lerobot.status"
rm -f "$HYBRIDVLA_LEROBOT_STATUS"
( if bash "$ROOT/scripts/setup_lerobot.sh" > "$ROOT/log/setup_lerobot.txt" 2>&1; then s=ok; else s=failed; fi
  echo "$s" > "$HYBRIDVLA_LEROBOT_STATUS.tmp" && mv "$HYBRIDVLA_LEROBOT_STATUS.tmp" "$HYBRIDVLA_LEROBOT_STATUS" ) &
# shellcheck disable=SC1091
source "$ROOT/scripts/env.sh"
cd "$ROOT"
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
# --durations: the slowest tests in every log (CI time is kept under 30 minutes)
exec python -m pytest --durations=25 "$@"
