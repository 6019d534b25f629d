"""Recorded demonstration episodes on disk, one finished episode at a time (ROS-free; numpy only).

``hybridvla record`` (:mod:`hybridvla_ros.nodes.demo_recorder_node`) samples the robot's topics at the control
rate and hands each frame to an :class:`EpisodeWriter`; LeRobot's own dataset code later turns the finished
episodes into a LeRobotDataset v3 (``python -m hybridvla_ros.lerobot_demos recording``, in the LeRobot
environment). This module is the durable part in between, so that what a crash can cost is bounded:

- an episode being recorded lives in ``<root>/episodes/episode_NNNNNN.partial/``: each camera's frames are
  appended to ``<camera>.rgb`` as they come (raw (H, W, 3) uint8, so memory stays flat at any resolution and a
  full disk shows up on the frame that hits it), the small arrays are kept in memory;
- ``finish(success)`` writes ``frames.npz`` (state, action, stamps, task per frame) and ``meta.json``, fsyncs
  every file, renames the directory to ``episode_NNNNNN`` and fsyncs the parent: a finished episode is on disk
  whole, or not at all. A kill -9 at any moment loses at most the episode being recorded;
- ``episode_NNNNNN.partial`` directories are unfinished by definition: a new writer removes them (saying so);
  indices continue after the highest finished one, so episodes are never overwritten.

Errors: :class:`RecordingError` with a one-line message for an unwritable root, too little free space to start
(``min_free_mb``), a frame whose shapes differ from the episode's, a write that fails (ENOSPC, EFBIG, EIO: the
partial episode is removed to give the space back) and calls out of order. A failed episode never touches the
finished ones.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

FORMAT = "hybridvla-recording/1"
EPISODES_DIR = "episodes"
PARTIAL_SUFFIX = ".partial"
_EPISODE = re.compile(r"^episode_(\d{6})$")
_CAMERA = re.compile(r"^[A-Za-z0-9_]+$")


class RecordingError(RuntimeError):
    """A recording step that could not be done; the message is the one line the operator sees."""


@dataclasses.dataclass(frozen=True)
class RecordingLayout:
    """What every frame of a recording holds: the robot, its joints and cameras, and the frame rate."""

    embodiment: str
    fps: int
    action_names: tuple[str, ...]  # the commanded joints, in action order
    state_names: tuple[str, ...]   # action_names then the observed-only state joints
    cameras: tuple[str, ...]       # observation.images.<camera>

    def __post_init__(self) -> None:
        if self.fps < 1:
            raise RecordingError(f"fps must be a positive integer, got {self.fps}")
        if not self.cameras or not all(_CAMERA.match(c) for c in self.cameras):
            raise RecordingError(f"camera names must be plain names ([A-Za-z0-9_]+), got {list(self.cameras)}")
        if len(set(self.cameras)) != len(self.cameras):
            raise RecordingError(f"camera names must be unique, got {list(self.cameras)}")
        if tuple(self.state_names[:len(self.action_names)]) != tuple(self.action_names):
            raise RecordingError("state_names must start with the action's joint names")


@dataclasses.dataclass(frozen=True)
class FinishedEpisode:
    """A finished episode on disk, as :func:`read_episode` returns it."""

    index: int
    path: Path
    meta: dict[str, Any]
    state: np.ndarray         # (N, S) float32
    action: np.ndarray        # (N, D) float32
    stamp_ns: np.ndarray      # (N,) int64, ROS time of each frame
    task: list[str]           # (N,)
    images: dict[str, np.ndarray]  # camera -> (N, H, W, 3) uint8 (a read-only memory map)

    @property
    def success(self) -> bool:
        return bool(self.meta["success"])

    def __len__(self) -> int:
        return int(self.state.shape[0])


def episodes_dir(root: str | os.PathLike[str]) -> Path:
    return Path(root).expanduser().absolute() / EPISODES_DIR


def finished_episodes(root: str | os.PathLike[str]) -> list[Path]:
    """The finished episode directories under ``root``, in index order (partial ones are not finished)."""
    d = episodes_dir(root)
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := _EPISODE.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def read_episode(path: str | os.PathLike[str]) -> FinishedEpisode:
    """Read a finished episode; raises RecordingError naming what is missing or inconsistent."""
    p = Path(path)
    try:
        meta = json.loads((p / "meta.json").read_text(encoding="utf-8"))
        with np.load(p / "frames.npz", allow_pickle=False) as z:
            state, action, stamp_ns, task_id = z["state"], z["action"], z["stamp_ns"], z["task_id"]
    except (OSError, ValueError, KeyError) as exc:
        raise RecordingError(f"episode {str(p)!r} cannot be read: {exc}") from exc
    if meta.get("format") != FORMAT:
        raise RecordingError(f"episode {str(p)!r} is not a {FORMAT} episode (format {meta.get('format')!r})")
    n = int(meta["frames"])
    tasks = list(meta["tasks"])
    images = {}
    for cam, shape in meta["image_shapes"].items():
        f = p / f"{cam}.rgb"
        want = n * int(np.prod(shape))
        size = f.stat().st_size if f.is_file() else -1
        if size != want:
            raise RecordingError(f"episode {str(p)!r}: {f.name} has {size} bytes, {n} frames of {shape} need {want}")
        images[cam] = (np.memmap(f, dtype=np.uint8, mode="r", shape=(n, *shape)) if n
                       else np.zeros((0, *shape), np.uint8))
    if not (len(state) == len(action) == len(stamp_ns) == len(task_id) == n):
        raise RecordingError(f"episode {str(p)!r}: arrays disagree with meta.json's {n} frames")
    return FinishedEpisode(int(meta["episode_index"]), p, meta, state, action, stamp_ns,
                           [tasks[i] for i in task_id], images)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: Path, write: Any) -> None:
    with open(path, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())


class EpisodeWriter:
    """Writes the episodes of one recording under ``<root>/episodes`` (module docstring).

    ``start(task)`` -> ``add_frame(...)`` per frame -> ``finish(success)`` or ``discard()``. Not thread-safe:
    one caller (the recorder node's timer and services run on one executor thread).
    """

    def __init__(self, root: str | os.PathLike[str], layout: RecordingLayout, min_free_mb: float = 100.0) -> None:
        self.layout = layout
        self.min_free_mb = float(min_free_mb)
        self.dir = episodes_dir(root)
        self.removed_partials: list[str] = []
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            probe = self.dir / f".probe-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise RecordingError(f"cannot record under {str(self.dir)!r}: {exc.strerror or exc}") from exc
        for p in sorted(self.dir.glob(f"episode_*{PARTIAL_SUFFIX}")):
            shutil.rmtree(p, ignore_errors=True)  # unfinished by definition (a crash while recording)
            self.removed_partials.append(p.name)
        done = finished_episodes(root)
        self.next_index = int(_EPISODE.match(done[-1].name).group(1)) + 1 if done else 0  # type: ignore[union-attr]
        self.finished = len(done)
        self._active: _ActiveEpisode | None = None

    @property
    def recording(self) -> bool:
        return self._active is not None

    @property
    def frames(self) -> int:
        """Frames of the episode being recorded (0 when none is)."""
        return 0 if self._active is None else len(self._active.stamp_ns)

    @property
    def episode_index(self) -> int | None:
        return None if self._active is None else self._active.index

    def free_mb(self) -> float:
        st = os.statvfs(self.dir)
        return st.f_bavail * st.f_frsize / 2**20

    def start(self) -> int:
        """Start the next episode; returns its index. Raises RecordingError when one is being recorded, the
        disk has less than ``min_free_mb`` free, or its directory cannot be made."""
        if self._active is not None:
            raise RecordingError(f"episode {self._active.index} is being recorded; stop or discard it first")
        free = self.free_mb()
        if free < self.min_free_mb:
            raise RecordingError(f"only {free:.0f} MiB free under {str(self.dir)!r} (min_free_mb "
                                 f"{self.min_free_mb:g}); free some space before recording")
        index = self.next_index
        path = self.dir / f"episode_{index:06d}{PARTIAL_SUFFIX}"
        try:
            path.mkdir()
        except OSError as exc:
            raise RecordingError(f"cannot start episode {index} in {str(self.dir)!r}: {exc.strerror or exc}") from exc
        self.next_index += 1
        self._active = _ActiveEpisode(index, path)
        return index

    def add_frame(self, images: dict[str, np.ndarray], state: np.ndarray, action: np.ndarray, stamp_ns: int,
                  task: str) -> None:
        """Append one frame. Raises RecordingError (nothing appended) for shapes that differ from the layout or
        the episode's first frame; for a failed write the episode is removed as well and the error says so."""
        ep = self._active
        if ep is None:
            raise RecordingError("no episode is being recorded; start one first")
        lay = self.layout
        state = np.asarray(state, dtype=np.float32).reshape(-1)
        action = np.asarray(action, dtype=np.float32).reshape(-1)
        if state.shape != (len(lay.state_names),) or action.shape != (len(lay.action_names),):
            raise RecordingError(f"frame has state {state.shape} and action {action.shape}; the layout needs "
                                 f"({len(lay.state_names)},) and ({len(lay.action_names)},)")
        if not (np.isfinite(state).all() and np.isfinite(action).all()):
            raise RecordingError("frame has a NaN or Inf in its state or action")
        if set(images) != set(lay.cameras):
            raise RecordingError(f"frame has cameras {sorted(images)}; the layout needs {sorted(lay.cameras)}")
        for cam, img in images.items():
            img = np.asarray(img)
            if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
                raise RecordingError(f"camera {cam!r}: image must be (H, W, 3) uint8, got {img.shape} {img.dtype}")
            if cam in ep.shapes and ep.shapes[cam] != img.shape:
                raise RecordingError(f"camera {cam!r}: image {img.shape} differs from the episode's {ep.shapes[cam]}")
        try:
            for cam, img in images.items():
                if cam not in ep.files:
                    ep.files[cam] = open(ep.path / f"{cam}.rgb", "wb")
                    ep.shapes[cam] = tuple(img.shape)
                ep.files[cam].write(np.ascontiguousarray(img).tobytes())
        except OSError as exc:
            index = ep.index
            self.discard()
            raise RecordingError(f"episode {index} lost: writing a frame failed ({exc.strerror or exc}); "
                                 "finished episodes are intact") from exc
        ep.state.append(state)
        ep.action.append(action)
        ep.stamp_ns.append(int(stamp_ns))
        ep.task_id.append(ep.tasks.setdefault(task, len(ep.tasks)))

    def finish(self, success: bool) -> Path:
        """Commit the episode being recorded (module docstring); returns its directory. An episode without
        frames is discarded and RecordingError raised; so is one whose commit fails (the error says so)."""
        ep = self._active
        if ep is None:
            raise RecordingError("no episode is being recorded")
        if not ep.stamp_ns:
            self.discard()
            raise RecordingError(f"episode {ep.index} has no frames; nothing saved")
        lay = self.layout
        meta = {
            "format": FORMAT, "episode_index": ep.index, "frames": len(ep.stamp_ns), "success": bool(success),
            "embodiment": lay.embodiment, "fps": lay.fps, "action_names": list(lay.action_names),
            "state_names": list(lay.state_names), "cameras": list(lay.cameras),
            "image_shapes": {c: list(ep.shapes[c]) for c in lay.cameras},
            "tasks": list(ep.tasks), "first_stamp_ns": ep.stamp_ns[0], "last_stamp_ns": ep.stamp_ns[-1],
        }
        final = self.dir / f"episode_{ep.index:06d}"
        try:
            for f in ep.files.values():
                f.flush()
                os.fsync(f.fileno())
                f.close()
            _write_file(ep.path / "frames.npz", lambda f: np.savez(
                f, state=np.stack(ep.state), action=np.stack(ep.action),
                stamp_ns=np.array(ep.stamp_ns, dtype=np.int64), task_id=np.array(ep.task_id, dtype=np.int32)))
            _write_file(ep.path / "meta.json", lambda f: f.write(json.dumps(meta, indent=1).encode()))
            _fsync_dir(ep.path)
            os.rename(ep.path, final)
            _fsync_dir(self.dir)
        except OSError as exc:
            self.discard()
            raise RecordingError(f"episode {ep.index} NOT saved: {exc.strerror or exc}; finished episodes are "
                                 "intact") from exc
        self._active = None
        self.finished += 1
        return final

    def discard(self) -> int | None:
        """Drop the episode being recorded (its files too); returns its index, None when none was."""
        ep, self._active = self._active, None
        if ep is None:
            return None
        for f in ep.files.values():
            try:
                f.close()
            except OSError:
                pass
        shutil.rmtree(ep.path, ignore_errors=True)
        return ep.index

    def close(self) -> None:
        """Discard an unfinished episode (a recorder shutting down mid-episode does not guess its outcome)."""
        self.discard()


class _ActiveEpisode:
    def __init__(self, index: int, path: Path) -> None:
        self.index, self.path = index, path
        self.files: dict[str, BinaryIO] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.state: list[np.ndarray] = []
        self.action: list[np.ndarray] = []
        self.stamp_ns: list[int] = []
        self.task_id: list[int] = []
        self.tasks: dict[str, int] = {}  # task -> id, in the order first seen


def summarize(paths: Sequence[Path]) -> dict[str, Any]:
    """Episodes, frames and successes of finished episodes (for the recorder's status and the CLI)."""
    frames = successes = 0
    for p in paths:
        meta = json.loads((p / "meta.json").read_text(encoding="utf-8"))
        frames += int(meta["frames"])
        successes += bool(meta["success"])
    return {"episodes": len(paths), "frames": frames, "successes": successes}
