"""Where the embodiment parameter files are, and which robots they describe (ROS-free).

An embodiment is its parameter file: ``config/<robot>.yaml`` names the robot, so adding a
robot adds no name to any list in the code.
"""
from __future__ import annotations

import os

_PACKAGE = __name__.split(".")[0]


def default_config_dir() -> str:
    """config/ of the source tree, or share/<package>/config of an install."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    source = os.path.join(os.path.dirname(here), "config")
    if os.path.isdir(source):
        return source
    try:
        from ament_index_python.packages import get_package_share_directory
        return os.path.join(get_package_share_directory(_PACKAGE), "config")
    except Exception:  # noqa: BLE001 - ament_index may be absent or the package not installed
        return source


def embodiment_names(config_dir: str | None = None) -> tuple[str, ...]:
    """The robots with a parameter file (``<robot>.yaml``) in ``config_dir``, sorted; empty if none."""
    folder = config_dir or default_config_dir()
    try:
        files = os.listdir(folder)
    except OSError:
        return ()
    return tuple(sorted(f[:-len(".yaml")] for f in files if f.endswith(".yaml") and not f.startswith(".")))
