# Source this (after scripts/setup_env.sh) to use the built packages in a shell:
#   source scripts/env.sh
_HV_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "${HYBRIDVLA_VENV:-$_HV_ROOT/.venv}/hybridvla_env.sh"
# colcon's generated setup chains AMENT_PREFIX_PATH, PYTHONPATH and PATH for our two packages.
source "$_HV_ROOT/install/setup.bash"
unset _HV_ROOT
