#!/usr/bin/env bash
# Makes the LeRobot sidecar's own environment, .venv-lerobot beside .venv, from requirements/lerobot.txt.
#
# LeRobot (0.6.1) needs Python >= 3.12 and torch < 2.12; our ROS 2 environment (.venv) is Python 3.11
# with torch 2.13, so a LeRobot policy runs in its own process from this environment:
#   .venv-lerobot/bin/python -m hybridvla_ros.lerobot_sidecar --policy-dir DIR --port 8000
# torch and torchvision come first: from the PyTorch CPU index when it is reachable (a CPU build of
# about 200 MB), else from PyPI (the CUDA build with its nvidia-* libraries, several GB; it runs on
# the CPU as well). Re-running is cheap: nothing is installed while requirements/lerobot.txt and the
# torch source are unchanged (a stamp in the venv).
#
# Environment: LEROBOT_PYTHON (a Python >= 3.12; default: python3.12, then pyenv's 3.12),
#   HYBRIDVLA_LEROBOT_VENV (default: <repo>/.venv-lerobot),
#   HYBRIDVLA_TORCH_INDEX (an index URL for torch/torchvision; "pypi" forces PyPI; default: the CPU
#   index https://download.pytorch.org/whl/cpu when reachable, else PyPI).
set -euo pipefail
trap 'printf "[setup-lerobot] FAILED at line %s: %s\n" "$LINENO" "$BASH_COMMAND" >&2' ERR

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${HYBRIDVLA_LEROBOT_VENV:-$ROOT/.venv-lerobot}"
REQ="$ROOT/requirements/lerobot.txt"
CPU_INDEX="https://download.pytorch.org/whl/cpu"
log() { printf '[setup-lerobot] %s\n' "$*" >&2; }
fail() { trap - ERR; printf '[setup-lerobot] FAILED: %s\n' "$*" >&2; exit 1; }

[[ -f $REQ ]] || fail "missing $REQ"

# --- 1. a Python >= 3.12 -----------------------------------------------------------
is_py312() { "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' 2>/dev/null; }
PY=""
for cand in "${LEROBOT_PYTHON:-}" python3.12 python3.13 \
            "$(pyenv root 2>/dev/null || echo /root/.pyenv)"/versions/3.12*/bin/python3.12; do
  [[ -z $cand ]] && continue
  if is_py312 "$cand"; then PY="$cand"; break; fi
done
[[ -n $PY ]] || fail "no Python >= 3.12 found (LeRobot needs it): install python3.12 or set LEROBOT_PYTHON"

# --- 2. where torch comes from ---------------------------------------------------------
TORCH_INDEX="${HYBRIDVLA_TORCH_INDEX:-}"
if [[ -z $TORCH_INDEX ]]; then
  if "$PY" -c "import urllib.request as u; u.urlopen('$CPU_INDEX/torch/', timeout=8)" 2>/dev/null; then
    TORCH_INDEX="$CPU_INDEX"
  else
    TORCH_INDEX=pypi
  fi
fi

STAMP="$VENV/.hybridvla_lerobot_installed"
write_pth() {  # `python -m hybridvla_ros.lerobot_sidecar` from any folder: the repository on sys.path
  local site; site="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  echo "$ROOT" > "$site/hybridvla_ros_repo.pth"
}
WANT="$TORCH_INDEX $(sha256sum "$REQ" | cut -c1-16)"
if [[ -x "$VENV/bin/python" && "$(cat "$STAMP" 2>/dev/null)" == "$WANT" ]]; then
  write_pth
  log "LeRobot environment up to date: $VENV"
  exit 0
fi

if [[ ! -x "$VENV/bin/python" ]]; then
  log "creating virtual environment $VENV ($("$PY" --version 2>&1))"
  "$PY" -m venv "$VENV" || fail "$PY -m venv $VENV"
fi
# never committed, never carried with the working tree (.gitignore names only .venv/)
echo '*' > "$VENV/.gitignore"
VPY="$VENV/bin/python"
is_py312 "$VPY" || fail "$VENV is not Python >= 3.12: remove it and re-run"

PIP=("$VPY" -m pip install --quiet --disable-pip-version-check)
# pip prints a warning per missing local index directory on our machines; keep real errors.
filter() { grep -v "is neither a file nor a directory" >&2 || true; }
pin() { grep -E "^$1==" "$REQ" | head -1; }
TORCH_PIN="$(pin torch)"; TV_PIN="$(pin torchvision)"
[[ -n $TORCH_PIN && -n $TV_PIN ]] || fail "requirements/lerobot.txt must pin torch== and torchvision=="

if [[ $TORCH_INDEX == pypi ]]; then
  log "installing $TORCH_PIN $TV_PIN from PyPI (CPU index unreachable: the CUDA build, several GB)"
  "${PIP[@]}" "$TORCH_PIN" "$TV_PIN" 2> >(filter) || fail "pip install $TORCH_PIN $TV_PIN"
else
  log "installing $TORCH_PIN $TV_PIN (CPU build) from $TORCH_INDEX"
  "${PIP[@]}" --index-url "$TORCH_INDEX" "$TORCH_PIN" "$TV_PIN" 2> >(filter) \
    || fail "pip install $TORCH_PIN $TV_PIN from $TORCH_INDEX (HYBRIDVLA_TORCH_INDEX=pypi to use PyPI)"
fi
log "installing requirements/lerobot.txt (lerobot, msgpack, websockets)"
"${PIP[@]}" -r "$REQ" 2> >(filter) || fail "pip install -r requirements/lerobot.txt"

write_pth
log "checking the environment imports"
"$VPY" - <<'PY' || fail "the LeRobot environment does not import (see above)"
import torch, lerobot, msgpack, websockets  # noqa: F401
from lerobot.policies.factory import get_policy_class, make_pre_post_processors  # noqa: F401
torch.zeros(2, 2) @ torch.ones(2, 2)
from importlib.metadata import version
print(f"[setup-lerobot] torch {torch.__version__}, lerobot {version('lerobot')}")
PY
echo "$WANT" > "$STAMP"
log "ready: $VPY -m hybridvla_ros.lerobot_sidecar --policy-dir DIR --port 8000"
