# Source this (after scripts/setup_env.sh) to use the built packages in a shell:
#   source scripts/env.sh
_HV_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# colcon's generated scripts read unset variables: relax `set -u` while sourcing them.
case $- in *u*) _HV_NOUNSET=1; set +u ;; *) _HV_NOUNSET= ;; esac
source "${HYBRIDVLA_VENV:-$_HV_ROOT/.venv}/hybridvla_env.sh"
# colcon's setup chains AMENT_PREFIX_PATH, PYTHONPATH and PATH for our two packages.
source "$_HV_ROOT/install/setup.bash"
# ament_python installs console scripts in lib/<package> (for ros2 run); put ours on PATH too.
export PATH="$_HV_ROOT/install/hybridvla_ros/lib/hybridvla_ros:$PATH"
[ -n "$_HV_NOUNSET" ] && set -u
unset _HV_ROOT _HV_NOUNSET
