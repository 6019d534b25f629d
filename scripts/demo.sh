#!/usr/bin/env bash
# The main job: installs what is missing, builds, trains a policy if there is none, and
# runs the whole node graph on the simulated Franka for 30 s, then prints a report.
#   bash scripts/demo.sh                         # franka, 30 s
#   bash scripts/demo.sh --embodiment aloha --duration 60
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup_env.sh"
# shellcheck disable=SC1091
source "$ROOT/scripts/env.sh"
cd "$ROOT"
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
exec python -m hybridvla_ros.cli demo "$@"
