"""Stored corrections -> a LeRobotDataset v3 (``hybridvla export-corrections --format lerobot``, issue 15 item 3).

Runs INSIDE the LeRobot environment made by ``scripts/setup_lerobot.sh`` (Python >= 3.12, lerobot with its
``dataset`` extra), never in the ROS 2 environment; ``hybridvla export-corrections --format lerobot`` starts it::

    .venv-lerobot/bin/python -m hybridvla_ros.lerobot_export --store S --out DIR [--repo-id local/corrections]
        [--fps F] [--camera front] [--video]

The store is read with :mod:`hybridvla_ros.core.correction_store` (sqlite3, numpy and cv2; no ROS) and the
dataset is written by LeRobot's own code: ``LeRobotDataset.create`` / ``add_frame`` / ``save_episode`` /
``finalize`` (mandatory: without it the parquet footers are missing). Nothing of the format is written here.

The dataset:

- one episode per (session_id, episode_index) of the store (the recorder's "one override = one episode"):
  sessions in the order the store first saw them, a session's episodes by index, frames in stamp order;
  ``robot_type`` = the store's embodiment (one per store); each frame's ``task`` = the instruction stored
  with it (an episode keeps its instruction unless the task changed during the override);
- ``observation.images.<camera>`` (H, W, 3): the stored image of each camera. The one that stamps the
  observations is named as the recorder stored it (the embodiment's ``camera_name``; ``--camera`` renames it;
  ``front`` for stores from before cameras had names); each of the robot's other cameras (``extra_cameras``)
  stored with every correction is a feature too. A camera missing from some corrections (stale at sync when
  they were stored) or stored at several sizes is left out, and the summary line names it. PNG inside the parquet by
  default: lossless, no encoder. ``--video`` writes AV1 through PyAV's bundled SVT-AV1 instead: lossy (mean
  2.5, max 178 grey levels off on 48x64 test images with sharp edges), no faster to write (5.6 s both for 17
  frames, mostly imports), and smaller only for many frames (80 frames of 96 px noise: 0.6 MB vs 2.3 MB);
  correction sets are small, so exact pixels win;
- ``observation.state``: the stored joint positions, float32, ``names`` = the stored joint names
  (commanded joints in action order, then observed-only state joints);
- ``action``: what the robot was commanded, i.e. the human's action, float32, ``names`` = the first D
  joint names;
- ``intervention`` bool (1,): True for a human frame (the convention of LeRobot's DAgger rollout);
- ``policy_action``: the policy's proposal at that moment, float32, zeros where the policy had proposed
  nothing, which ``policy_action_valid`` bool (1,) says;
- ``correction_stamp_ns`` int64 (1,): the stamp (ROS time, ns) of the stored correction this frame is
  (integer: LeRobot's reader turns float64 features into float32, which would round ROS time to 128 s).

What the store does not have: the autonomous stretch around each correction. The recorder stores human
frames only, so every frame here has ``intervention`` True and none is made up; exporting the policy's
frames before and after an override needs a recorder that keeps them.

Resampling: LeRobot's timestamp is ``frame_index / fps`` and cannot be set, while stored stamps are
irregular (the recorder stores at most one correction per ``min_interval_s``, skips stale observations,
and a human stream has jitter). Each episode is put on the grid ``t0 + k / fps`` from its first to its last
stamp, and each grid point takes the whole stored correction nearest in time (image, state and actions of
one record together, never interpolated). Corrections closer together than a period can be dropped and a
gap repeats the nearest one; the summary line counts both, and ``correction_stamp_ns`` tells them apart.
Without ``--fps`` the rate is 1 / the median interval between a store's successive corrections in an
episode, rounded (10 for the recorder's default ``min_interval_s`` of 0.1 s), so a regular store
keeps every correction exactly once.

All corrections are held in memory while writing (about 30 KB each at the recorder's 96 px).

Errors (a missing, empty or unreadable store, mixed embodiments or dimensions, an output directory that
exists or cannot be written, LeRobot missing) end with one line on stderr and exit code 2 (usage) or 1;
the dataset is written to a temporary directory beside ``--out`` and renamed into place only once
finalized, so nothing half-written is left behind.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import shutil
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

try:
    from hybridvla_ros.core.correction_store import CorrectionRecord, CorrectionStore, CorrectionStoreError
except ImportError:  # run as a file with the repository not on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from hybridvla_ros.core.correction_store import CorrectionRecord, CorrectionStore, CorrectionStoreError

PROG = "hybridvla export-corrections"
DEFAULT_REPO_ID = "local/corrections"
DEFAULT_CAMERA = "front"
FALLBACK_FPS = 10  # a store whose episodes all have one correction: the recorder's default rate
STATE, ACTION, INTERVENTION = "observation.state", "action", "intervention"
POLICY_ACTION, POLICY_ACTION_VALID, STAMP = "policy_action", "policy_action_valid", "correction_stamp_ns"


class ExportError(RuntimeError):
    """The store cannot be exported as asked; the message is the one line the user sees, ``code`` the exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


@dataclasses.dataclass
class Episode:
    """The stored corrections of one (session_id, episode_index), sorted by stamp."""

    session_id: str
    episode_index: int
    records: list[CorrectionRecord]

    @property
    def stamps(self) -> np.ndarray:
        return np.array([r.stamp_s for r in self.records], dtype=np.float64)  # (n,)


def group_episodes(records: Iterable[CorrectionRecord]) -> list[Episode]:
    """One :class:`Episode` per (session_id, episode_index): sessions in first-seen order, each session's
    episodes by index, records sorted by stamp (a stable sort: equal stamps keep the store's order)."""
    groups: dict[tuple[str, int], Episode] = {}
    for r in records:
        key = (r.session_id, int(r.episode_index))
        if key not in groups:
            groups[key] = Episode(r.session_id, int(r.episode_index), [])
        groups[key].records.append(r)
    sessions = {session: n for n, session in enumerate(dict.fromkeys(s for s, _ in groups))}
    for ep in groups.values():
        ep.records.sort(key=lambda r: r.stamp_s)
    return sorted(groups.values(), key=lambda ep: (sessions[ep.session_id], ep.episode_index))


def estimate_fps(episodes: Sequence[Episode]) -> int:
    """1 / the median positive interval between successive stamps within episodes, rounded, >= 1;
    FALLBACK_FPS when no episode has two distinct stamps."""
    gaps = np.concatenate([np.diff(ep.stamps) for ep in episodes] or [np.zeros(0)])
    gaps = gaps[gaps > 0]
    if gaps.size == 0:
        return FALLBACK_FPS
    return max(1, int(round(1.0 / float(np.median(gaps)))))


def resample_indices(stamps: np.ndarray, fps: int) -> np.ndarray:
    """For sorted ``stamps`` (n,), the index of the stamp nearest each grid time ``t0 + k / fps``
    (k = 0 .. round((t_last - t0) * fps)); a tie goes to the earlier stamp. Returns (K,) int64."""
    stamps = np.asarray(stamps, dtype=np.float64)
    if stamps.size == 0:
        return np.zeros(0, dtype=np.int64)
    t0 = stamps[0]
    n_grid = int(round((stamps[-1] - t0) * fps)) + 1
    grid = t0 + np.arange(n_grid, dtype=np.float64) / fps  # (K,)
    right = np.clip(np.searchsorted(stamps, grid, side="left"), 1, max(stamps.size - 1, 1))
    left = right - 1
    if stamps.size == 1:
        return np.zeros(n_grid, dtype=np.int64)
    pick_right = (stamps[right] - grid) < (grid - stamps[left])
    return np.where(pick_right, right, left).astype(np.int64)


@dataclasses.dataclass(frozen=True)
class Layout:
    """What every record of the store shares: the dataset's features and robot type."""

    embodiment: str
    image_shape: tuple[int, int, int]
    joint_names: tuple[str, ...]
    action_dim: int
    camera: str = ""  # the anchor camera's stored name ('' when the records disagree or name none)
    extra_cameras: tuple[tuple[str, tuple[int, int, int]], ...] = ()  # (name, shape) stored with every record
    left_out: tuple[str, ...] = ()  # other cameras some records lack (or of several sizes): not exported

    @property
    def action_names(self) -> list[str]:
        return list(self.joint_names[:self.action_dim])


def check_layout(records: Sequence[CorrectionRecord]) -> Layout:
    """The shared :class:`Layout` of ``records``; raises ExportError naming what differs."""
    if not records:
        raise ExportError("the store holds no corrections")
    first = records[0]
    state_dim = first.joint_positions.size
    names = first.joint_names or tuple(f"joint_{i}" for i in range(state_dim))
    action_dim = first.human_action.size
    if len(names) < action_dim:
        names = (*names, *(f"action_{i}" for i in range(len(names), action_dim)))
    h, w, c = (int(n) for n in first.image.shape)
    layout = Layout(first.embodiment, (h, w, c), tuple(names), action_dim,
                    camera=first.camera_name if all(r.camera_name == first.camera_name for r in records) else "")
    seen = {cam for r in records for cam in r.extra_images}
    shapes: dict[str, set[tuple[int, int, int]]] = {
        cam: {_shape3(r.extra_images[cam]) for r in records if cam in r.extra_images} for cam in seen}
    kept = [cam for r in records[:1] for cam in r.extra_images  # the first record's order
            if all(cam in x.extra_images for x in records) and len(shapes[cam]) == 1]
    layout = dataclasses.replace(layout, extra_cameras=tuple((cam, next(iter(shapes[cam]))) for cam in kept),
                                 left_out=tuple(sorted(seen - set(kept))))
    for r in records:
        if r.embodiment != layout.embodiment:
            raise ExportError(f"the store mixes embodiments ({layout.embodiment!r} and {r.embodiment!r}); "
                              "a LeRobotDataset has one robot type: keep one store per embodiment")
        if tuple(r.image.shape) != layout.image_shape:
            raise ExportError(f"images of different sizes in the store ({layout.image_shape} and "
                              f"{tuple(r.image.shape)}); a dataset feature has one shape")
        if r.joint_positions.size != state_dim or (r.joint_names and r.joint_names != first.joint_names):
            raise ExportError(f"joints differ between corrections ({list(first.joint_names)} x {state_dim} and "
                              f"{list(r.joint_names)} x {r.joint_positions.size}); keep one store per embodiment")
        if r.human_action.size != action_dim:
            raise ExportError(f"actions of different dimensions in the store ({action_dim} and "
                              f"{r.human_action.size}); keep one store per embodiment")
    return layout


def _shape3(image: np.ndarray) -> tuple[int, int, int]:
    h, w, c = (int(n) for n in image.shape)
    return h, w, c


def dataset_features(layout: Layout, camera: str, use_videos: bool) -> dict[str, dict[str, Any]]:
    """LeRobot's ``features`` dict for ``layout``, the anchor camera named ``camera``."""
    d = layout.action_dim
    images = {f"observation.images.{name}": {"dtype": "video" if use_videos else "image", "shape": shape,
                                             "names": ["height", "width", "channels"]}
              for name, shape in ((camera, layout.image_shape), *layout.extra_cameras)}
    return {
        **images,
        STATE: {"dtype": "float32", "shape": (len(layout.joint_names),), "names": list(layout.joint_names)},
        ACTION: {"dtype": "float32", "shape": (d,), "names": layout.action_names},
        INTERVENTION: {"dtype": "bool", "shape": (1,), "names": None},
        POLICY_ACTION: {"dtype": "float32", "shape": (d,), "names": layout.action_names},
        POLICY_ACTION_VALID: {"dtype": "bool", "shape": (1,), "names": None},
        STAMP: {"dtype": "int64", "shape": (1,), "names": None},
    }


def frame_of(record: CorrectionRecord, camera: str, action_dim: int,
             extra_cameras: Sequence[str] = ()) -> dict[str, Any]:
    """One LeRobot frame (with its ``task``) from a stored correction: the anchor image as ``camera``, and
    each of ``extra_cameras`` (which the record must have)."""
    proposal = record.proposed_action if record.has_proposal else np.zeros(action_dim)
    return {
        f"observation.images.{camera}": np.ascontiguousarray(record.image, dtype=np.uint8),  # (H, W, 3)
        **{f"observation.images.{name}": np.ascontiguousarray(record.extra_images[name], dtype=np.uint8)
           for name in extra_cameras},
        STATE: record.joint_positions.astype(np.float32),
        ACTION: record.human_action.astype(np.float32),
        INTERVENTION: np.array([True]),  # the store holds human frames only
        POLICY_ACTION: np.asarray(proposal, dtype=np.float32),
        POLICY_ACTION_VALID: np.array([record.has_proposal]),
        STAMP: np.array([round(record.stamp_s * 1e9)], dtype=np.int64),
        "task": record.instruction,
    }


@dataclasses.dataclass
class Summary:
    corrections: int
    episodes: int
    frames: int
    repeated: int  # frames that repeat a correction already used (a gap longer than a period)
    dropped: int   # corrections no frame took (closer together than a period)
    fps: int
    robot_type: str
    use_videos: bool
    cameras: tuple[str, ...] = ()
    left_out: tuple[str, ...] = ()

    def line(self, out: str, repo_id: str) -> str:
        images = "AV1 video" if self.use_videos else "PNG in parquet"
        left = (f"; cameras {list(self.left_out)} left out (missing from some corrections or of several sizes)"
                if self.left_out else "")
        return (f"wrote {self.frames} frames in {self.episodes} episodes from {self.corrections} corrections "
                f"({self.repeated} repeated, {self.dropped} dropped by resampling to {self.fps} fps) to {out} "
                f"(LeRobotDataset v3, repo_id {repo_id}, robot_type {self.robot_type}, cameras "
                f"{list(self.cameras)}, images {images}; human frames only: the store keeps no autonomous "
                f"frames{left})")


def _out_paths(out: str) -> tuple[Path, Path]:
    """(final, temporary) directories; raises ExportError if ``out`` exists or its parent cannot be written."""
    final = Path(out).expanduser().absolute()
    if final.exists():
        raise ExportError(f"{str(final)!r} already exists; choose a new --out or remove it")
    parent = final.parent
    blocker = parent
    while not blocker.exists() and blocker != blocker.parent:
        blocker = blocker.parent
    if not blocker.is_dir():
        raise ExportError(f"cannot write --out {str(final)!r}: {str(blocker)!r} is a file, not a directory")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"cannot create {str(parent)!r} for --out: {exc.strerror or exc}") from exc
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ExportError(f"{str(parent)!r} is not writable; choose a writable --out")
    return final, parent / f".{final.name}.partial-{os.getpid()}"


def check_camera_name(camera: str) -> None:
    """Raise ExportError unless ``camera`` can name an ``observation.images.<camera>`` feature."""
    if not camera or "/" in camera or "." in camera:
        raise ExportError(f"--camera must be a plain name (it becomes observation.images.<camera>), got {camera!r}")


def import_lerobot_dataset() -> Any:
    """LeRobot's ``LeRobotDataset`` class; ExportError when LeRobot's dataset code is not installed here."""
    try:
        from lerobot.datasets.lerobot_dataset import LeRobotDataset
    except ImportError as exc:
        raise ExportError(f"LeRobot's dataset code cannot be imported ({exc}); run this with .venv-lerobot's "
                          "python (scripts/setup_lerobot.sh installs lerobot with its dataset extra)") from exc
    return LeRobotDataset


def write_dataset(out: str, repo_id: str, fps: int, features: dict[str, dict[str, Any]], robot_type: str,
                  use_videos: bool, fill: Callable[[Any], None]) -> Path:
    """Create a LeRobotDataset v3 in a temporary directory beside the new directory ``out``, let ``fill`` add
    its frames and episodes, finalize it (mandatory) and rename it into place; returns ``out`` as an absolute
    path. Raises ExportError (nothing left at ``out`` nor beside it)."""
    final, tmp = _out_paths(out)
    LeRobotDataset = import_lerobot_dataset()
    try:
        dataset = LeRobotDataset.create(repo_id, fps, features, root=tmp, robot_type=robot_type,
                                        use_videos=use_videos)
        try:
            fill(dataset)
        finally:
            dataset.finalize()
        os.rename(tmp, final)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError):
            raise ExportError(f"writing the dataset under {str(final.parent)!r} failed: {exc}") from exc
        raise
    return final


def prepare_lerobot_process() -> None:
    """Settings for a process that reads or writes local datasets with LeRobot's code."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local dataset: nothing is fetched or pushed
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    # Without a system FFmpeg, torchcodec (from lerobot's dataset extra) fails to load and LeRobot logs a long
    # traceback before falling back to PyAV, which writes and decodes what we need.
    logging.getLogger("lerobot.utils.import_utils").setLevel(logging.ERROR)


def export_lerobot(store_path: str, out: str, repo_id: str = DEFAULT_REPO_ID, fps: int | None = None,
                   camera: str | None = None, use_videos: bool = False) -> Summary:
    """Write the corrections of the store at ``store_path`` as a LeRobotDataset v3 in the new directory
    ``out``; returns what was written. ``camera``: the anchor camera's feature name (default: as stored,
    else ``front``). Raises ExportError (one-line message) for anything that stops it, leaving nothing at
    ``out`` nor beside it."""
    if fps is not None and fps < 1:
        raise ExportError(f"--fps must be a positive integer, got {fps}")
    if not os.path.isfile(store_path):
        raise ExportError(f"no correction store at {store_path!r}", code=2)
    try:
        with CorrectionStore(store_path, replay_capacity=0) as store:
            records = list(store.iter_records())
    except CorrectionStoreError as exc:
        raise ExportError(str(exc)) from exc
    if not records:
        raise ExportError(f"the correction store {store_path!r} holds no corrections; nothing to export")
    layout = check_layout(records)
    camera = camera or layout.camera or DEFAULT_CAMERA
    check_camera_name(camera)
    extras = [name for name, _ in layout.extra_cameras]
    if camera in extras:
        raise ExportError(f"--camera {camera!r} is the name of another stored camera ({extras})")
    episodes = group_episodes(records)
    rate = fps if fps is not None else estimate_fps(episodes)
    frames = repeated = dropped = 0

    def fill(dataset: Any) -> None:
        nonlocal frames, repeated, dropped
        for ep in episodes:
            picks = resample_indices(ep.stamps, rate)
            used = np.unique(picks)
            repeated += int(picks.size - used.size)
            dropped += int(len(ep.records) - used.size)
            for i in picks:
                dataset.add_frame(frame_of(ep.records[int(i)], camera, layout.action_dim, extras))
            dataset.save_episode()
            frames += int(picks.size)

    write_dataset(out, repo_id, rate, dataset_features(layout, camera, use_videos), layout.embodiment, use_videos,
                  fill)
    return Summary(len(records), len(episodes), frames, repeated, dropped, rate, layout.embodiment, use_videos,
                   (camera, *extras), layout.left_out)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=f"{PROG} --format lerobot",
                                 description="Write stored corrections as a LeRobotDataset v3 (LeRobot's own code).")
    ap.add_argument("--store", required=True, help="the correction store (SQLite)")
    ap.add_argument("--out", required=True, help="the dataset's root directory; must not exist yet")
    ap.add_argument("--repo-id", default=DEFAULT_REPO_ID, help="the dataset's repo_id (nothing is pushed)")
    ap.add_argument("--fps", type=int, default=None,
                    help="frames per second (default: from the stored stamps' median interval)")
    ap.add_argument("--camera", default=None, help="the name of the stored image that stamps the observations, "
                    "observation.images.<camera> (default: the name it was stored under, else front)")
    ap.add_argument("--video", action="store_true", help="AV1 video (PyAV) instead of lossless PNG in parquet")
    return ap


def main(argv: list[str] | None = None) -> int:
    """Entry point; 0 on success, 2 for a missing store, 1 for any other error (one line on stderr)."""
    args = build_parser().parse_args(argv)
    prepare_lerobot_process()
    try:
        summary = export_lerobot(args.store, args.out, args.repo_id, args.fps, args.camera, args.video)
    except ExportError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return exc.code
    except (ValueError, RuntimeError, OSError) as exc:  # from LeRobot's writer
        print(f"{PROG}: error: writing the dataset failed: {type(exc).__name__}: {str(exc).strip()}".replace(
            "\n", " "), file=sys.stderr)
        return 1
    print(summary.line(str(Path(args.out).expanduser().absolute()), args.repo_id))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
