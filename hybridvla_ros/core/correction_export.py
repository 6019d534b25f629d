"""Stored corrections -> a ROS 2 MCAP file (``ros2 bag info/play`` and Foxglove read it) (ROS-free).

One ``hybridvla_msgs/msg/Correction`` per stored record, CDR-encoded by ``mcap-ros2-support``
with the ``.msg`` schema text inside the file, so no ROS installation is needed to read it.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterable
from typing import Any

import numpy as np

from hybridvla_ros.core.correction_store import (
    CORRECTION_TOPIC,
    CORRECTION_TYPE,
    CorrectionRecord,
    CorrectionStore,
    CorrectionStoreError,
)

__all__ = ["export_mcap", "correction_message", "correction_msgdef"]

_PRIMITIVES = {"bool", "byte", "char", "float32", "float64", "int8", "uint8", "int16", "uint16", "int32",
               "uint32", "int64", "uint64", "string", "wstring"}
_SEPARATOR = "=" * 80


def _msg_search_dirs(extra: Iterable[str] = ()) -> list[str]:
    """share/ folders where ``<pkg>/msg/<Name>.msg`` may live: AMENT_PREFIX_PATH, then this repo."""
    dirs = list(extra)
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if prefix:
            dirs.append(os.path.join(prefix, "share"))
    return dirs


def _find_msg(pkg: str, name: str, dirs: list[str]) -> str:
    repo_msg = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "msg")
    candidates = [os.path.join(d, pkg, "msg", f"{name}.msg") for d in dirs]
    if pkg == "hybridvla_msgs":
        candidates.append(os.path.join(repo_msg, f"{name}.msg"))
    for c in candidates:
        if os.path.isfile(c):
            with open(c, encoding="utf-8") as f:
                return f.read()
    raise CorrectionStoreError(
        f"message definition {pkg}/msg/{name}.msg not found under AMENT_PREFIX_PATH; "
        "source the ROS 2 environment (scripts/env.sh) before exporting")


def correction_msgdef(msg_dirs: Iterable[str] = ()) -> str:
    """The ros2msg schema text of hybridvla_msgs/msg/Correction with every dependency appended.

    Same layout rosbag2 writes into MCAP: the type's own .msg text, then for each nested
    type a line of 80 '=', ``MSG: pkg/Name`` and its text. Raises CorrectionStoreError if
    a .msg file cannot be found.
    """
    dirs = _msg_search_dirs(msg_dirs)
    root = _find_msg("hybridvla_msgs", "Correction", dirs)
    seen: dict[str, str] = {}
    todo = [("hybridvla_msgs", root)]
    while todo:
        pkg, text = todo.pop(0)
        for line in text.splitlines():
            tokens = line.split("#", 1)[0].split()
            if len(tokens) < 2 or "=" in tokens[1] or (len(tokens) > 2 and tokens[2].startswith("=")):
                continue  # blank, comment or constant
            base = re.split(r"[\[<]", tokens[0])[0]  # float64[] -> float64, string<=5 -> string
            if base in _PRIMITIVES:
                continue
            if base == "Header":
                full = "std_msgs/Header"
            elif "/" in base:
                full = base.replace("/msg/", "/")
            else:
                full = f"{pkg}/{base}"
            if full in seen:
                continue
            dep_pkg, dep_name = full.split("/")
            seen[full] = _find_msg(dep_pkg, dep_name, dirs)
            todo.append((dep_pkg, seen[full]))
    parts = [root.rstrip("\n")]
    for full, text in seen.items():
        parts += [_SEPARATOR, f"MSG: {full}", text.rstrip("\n")]
    return "\n".join(parts) + "\n"


def _stamp(t_s: float) -> dict[str, int]:
    sec = int(t_s // 1)
    return {"sec": sec, "nanosec": min(int(round((t_s - sec) * 1e9)), 999_999_999)}


def _image(header: dict[str, Any], image: np.ndarray) -> dict[str, Any]:
    h, w = image.shape[:2]
    return {"header": header, "height": h, "width": w, "encoding": "rgb8", "is_bigendian": 0, "step": w * 3,
            "data": np.ascontiguousarray(image).tobytes()}


def correction_message(record: CorrectionRecord) -> dict[str, Any]:
    """``record`` as a hybridvla_msgs/Correction in plain dicts (what the MCAP encoder takes)."""
    header = {"stamp": _stamp(record.stamp_s), "frame_id": record.frame_id}
    wrench = np.asarray(record.wrench, dtype=np.float64)
    has_wrench = wrench.size == 6
    f = wrench[:3] if has_wrench else np.zeros(3)
    t = wrench[3:] if has_wrench else np.zeros(3)
    observation = {
        "header": header,
        "embodiment": record.embodiment,
        "instruction": record.instruction,
        "image": _image(header, record.image),
        "camera_name": record.camera_name,
        "extra_camera_names": list(record.extra_images),
        "extra_images": [_image(header, image) for image in record.extra_images.values()],  # stamped as the anchor
        "joint_names": list(record.joint_names),
        "joint_positions": record.joint_positions.tolist(),
        "joint_velocities": np.asarray(record.joint_velocities, dtype=np.float64).tolist(),
        "has_wrench": has_wrench,
        "wrench": {"force": dict(zip("xyz", map(float, f))), "torque": dict(zip("xyz", map(float, t)))},
        "proprio_skew_s": 0.0,
        "interpolated": False,
    }
    return {"header": header, "observation": observation,
            "proposed_action": np.asarray(record.proposed_action, dtype=np.float64).tolist(),
            "human_action": record.human_action.tolist()}


def export_mcap(store: CorrectionStore, path: str, topic: str = CORRECTION_TOPIC,
                msg_dirs: Iterable[str] = ()) -> int:
    """Write every correction in ``store`` to ``path`` as a ROS 2 MCAP file; returns the message count.

    One ``hybridvla_msgs/msg/Correction`` per record on ``topic`` (CDR, ``ros2msg`` schema
    with dependencies, profile ``ros2``), log time = the correction's stamp: what rosbag2's
    MCAP storage plugin reads (``ros2 bag info/play``). Needs the ``mcap-ros2-support``
    package; raises CorrectionStoreError if it is missing or a .msg file cannot be found.
    """
    try:
        from mcap_ros2.writer import Writer
    except ImportError as exc:
        raise CorrectionStoreError(
            "export_mcap needs the mcap and mcap-ros2-support packages (pip install mcap-ros2-support)") from exc
    msgdef = correction_msgdef(msg_dirs)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    n = 0
    with open(tmp, "wb") as f:
        writer = Writer(f)
        schema = writer.register_msgdef(CORRECTION_TYPE, msgdef)
        for record in store.iter_records():
            t_ns = max(int(round(record.stamp_s * 1e9)), 0)
            writer.write_message(topic, schema, correction_message(record), log_time=t_ns, publish_time=t_ns,
                                 sequence=n)
            n += 1
        writer.finish()
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)  # a reader never sees a half-written export
    return n
