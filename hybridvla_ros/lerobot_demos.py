"""Demonstrations <-> LeRobotDataset v3, with LeRobot's own dataset code (issue 15, items 2 and 4).

Runs INSIDE the LeRobot environment made by ``scripts/setup_lerobot.sh`` (Python >= 3.12, lerobot with its
``dataset`` extra), never in the ROS 2 environment; ``hybridvla export-demos`` and ``hybridvla train
--dataset`` start it::

    .venv-lerobot/bin/python -m hybridvla_ros.lerobot_demos write --demos FILE.npz --out DIR
        --joint-names J1 .. --state-names S1 .. [--repo-id local/demos] [--camera front | --cameras A B ..]
        [--video]
    .venv-lerobot/bin/python -m hybridvla_ros.lerobot_demos read --dataset DIR --out FILE.npz
        --image-size S [--camera NAME | --cameras NAME NAME ..]
    .venv-lerobot/bin/python -m hybridvla_ros.lerobot_demos recording --root DIR [--repo-id ID] [--video]

``write``: a demonstration set as :mod:`hybridvla_ros.sim.demos` saves it (our scripted experts' recordings)
becomes a dataset ``lerobot-train`` trains on: an episode per recorded episode, ``fps`` = the recording's
control rate, ``robot_type`` = its embodiment, ``task`` = its instruction;
``observation.images.<camera>`` the recorded (S, S, 3) image (PNG in the parquet, or AV1 with ``--video``;
a recording from several cameras: one per name of ``--cameras``),
``observation.state`` the measured joints then the state joints (named), ``action`` what the expert
commanded at that step (``actions[:, 0]``, named by the joints). The dataset is written to a temporary
directory beside ``--out`` and renamed into place once finalized.

``recording``: the episodes ``hybridvla record`` committed under ``<root>/episodes`` become the dataset
``<root>/lerobot`` (:func:`write_recording`), rebuilt from all of them and swapped in.

``read``: any LeRobotDataset v3 on disk (``LeRobotDataset(repo_id, root=DIR)``, nothing fetched) becomes one
``.npz`` of frames in dataset order for the ROS environment, where
:mod:`hybridvla_ros.model.lerobot_data` maps it onto an embodiment (joints by feature names, chunks, checks):
``image`` (N, S, S, 3) uint8 of one camera (``--cameras``: (N, K, S, S, 3), those cameras in that order),
resized with cv2.INTER_AREA (a square stretch of the whole image, as the inference node does to camera frames);
``state`` and ``action`` float32 as stored; ``episode_index``,
``frame_index``; ``task`` (N,) str; ``success`` (N,) bool where the dataset has ``next.success``; and
``meta``, a JSON string: fps, robot_type, codebase_version, the
camera read, every camera, and every feature's dtype / shape / names. The camera is ``--camera`` or the
dataset's only one. Frames are read one by one through ``LeRobotDataset.__getitem__`` (videos decoded by
LeRobot), so reading costs what LeRobot's data loader costs.

Errors (missing files, an output that exists, a dataset without ``observation.state``, ``action`` or the
camera, LeRobot missing) end with one line on stderr and exit code 2 (usage, missing input) or 1.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

try:
    from hybridvla_ros import lerobot_export as common
except ImportError:  # run as a file with the repository not on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from hybridvla_ros import lerobot_export as common
ExportError = common.ExportError

PROG = "hybridvla_ros.lerobot_demos"
DEFAULT_REPO_ID = "local/demos"
DEFAULT_CAMERA, STATE, ACTION = common.DEFAULT_CAMERA, common.STATE, common.ACTION
IMAGES_PREFIX = "observation.images."
SUCCESS = "next.success"


# ---------------------------------------------------------------- write: our demonstrations -> dataset
def _load_demos(path: str) -> dict[str, np.ndarray]:
    if not os.path.isfile(path):
        raise ExportError(f"no demonstrations file at {path!r}", code=2)
    try:
        with np.load(path, allow_pickle=False) as npz:
            demos = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as exc:
        raise ExportError(f"{path!r} is not a readable demonstrations .npz: {exc}") from None
    for key in ("images", "proprio", "actions", "episode", "embodiment", "instruction", "control_period_s"):
        if key not in demos:
            raise ExportError(f"{path!r} is not a demonstration set: key {key!r} is missing")
    return demos


def write_demos(demos_path: str, out: str, joint_names: list[str], state_names: list[str],
                repo_id: str = DEFAULT_REPO_ID, camera: str = DEFAULT_CAMERA, use_videos: bool = False,
                cameras: list[str] | None = None) -> str:
    """Write the demonstration set at ``demos_path`` as a LeRobotDataset v3 in the new directory ``out``;
    returns the summary line. ``cameras`` names the K views of a recording made with several cameras
    (images (N, K, S, S, 3), ``hybridvla train --cameras``), one ``observation.images.<name>`` each;
    a one-camera recording's view is ``camera``. Raises ExportError, leaving nothing at ``out`` nor beside it."""
    demos = _load_demos(demos_path)
    images, proprio, actions = demos["images"], demos["proprio"], demos["actions"]
    if images.ndim == 5:
        if not cameras or len(cameras) != images.shape[1]:
            raise ExportError(f"{demos_path!r} holds {images.shape[1]} camera views per step (hybridvla train "
                              f"--cameras): name them, in recording order, with --cameras "
                              f"({len(cameras or [])} given)")
        if len(set(cameras)) != len(cameras):
            raise ExportError(f"--cameras: {cameras} names a camera twice")
        names_views = list(cameras)
    elif cameras:
        raise ExportError(f"{demos_path!r} holds one camera view per step: name it with --camera, not --cameras")
    else:
        names_views = [camera]
    for name in names_views:
        common.check_camera_name(name)
    views = images if images.ndim == 5 else images[:, None]  # (N, K, S, S, 3)
    state = demos["state"] if "state" in demos else np.zeros((len(proprio), 0), dtype=np.float32)
    episode = demos["episode"]
    n, d = proprio.shape
    if len(joint_names) != d or state.shape != (n, len(state_names)):
        raise ExportError(f"the demonstrations have {d} joints and {state.shape[1]} state joints; "
                          f"--joint-names names {len(joint_names)}, --state-names {len(state_names)}")
    period = float(demos["control_period_s"])
    fps = int(round(1.0 / period))
    if abs(fps * period - 1.0) > 1e-6:
        raise ExportError(f"control period {period} s is not a whole number of frames per second; "
                          "a LeRobotDataset's fps is an integer")
    robot_type, task = str(demos["embodiment"]), str(demos["instruction"])
    names = [*joint_names, *state_names]
    features: dict[str, dict[str, Any]] = {
        **{f"{IMAGES_PREFIX}{name}": {"dtype": "video" if use_videos else "image",
                                      "shape": tuple(int(s) for s in views.shape[2:]),
                                      "names": ["height", "width", "channels"]} for name in names_views},
        STATE: {"dtype": "float32", "shape": (len(names),), "names": names},
        ACTION: {"dtype": "float32", "shape": (d,), "names": list(joint_names)},
    }
    starts = np.flatnonzero(np.r_[True, episode[1:] != episode[:-1], True])  # episode boundaries, in order

    def fill(dataset: Any) -> None:
        for a, b in zip(starts[:-1], starts[1:]):
            for i in range(a, b):
                dataset.add_frame({
                    **{f"{IMAGES_PREFIX}{name}": np.ascontiguousarray(views[i, k], dtype=np.uint8)
                       for k, name in enumerate(names_views)},
                    STATE: np.concatenate([proprio[i], state[i]]).astype(np.float32),
                    ACTION: actions[i, 0].astype(np.float32),
                    "task": task,
                })
            dataset.save_episode()

    final = common.write_dataset(out, repo_id, fps, features, robot_type, use_videos, fill)
    return (f"wrote {n} frames in {len(starts) - 1} episodes to {final} (LeRobotDataset v3, repo_id {repo_id}, "
            f"robot_type {robot_type}, {fps} fps, cameras {names_views}, "
            f"images {'AV1 video' if use_videos else 'PNG in parquet'})")


# ---------------------------------------------------------------- recording: recorded episodes -> dataset
RECORDING_DATASET = "lerobot"


def write_recording(root: str, repo_id: str = "local/recording", use_videos: bool = False) -> str:
    """Write every finished episode recorded under ``root`` (:mod:`hybridvla_ros.core.recording`) as one
    LeRobotDataset v3 at ``<root>/lerobot``, replacing the one an earlier conversion wrote; returns the summary
    line. The recorded episodes are the durable copy: the dataset is rebuilt from all of them in a temporary
    directory and swapped in only once finalized, so an interrupted conversion leaves the earlier dataset (or
    none) and every episode. Raises ExportError for no episodes or episodes that disagree."""
    from hybridvla_ros.core.recording import RecordingError, finished_episodes, read_episode
    base = Path(root).expanduser().absolute()
    paths = finished_episodes(base)
    if not paths:
        raise ExportError(f"no finished episodes under {str(base / 'episodes')!r}; record some first", code=2)
    try:
        episodes = [read_episode(p) for p in paths]
    except RecordingError as exc:
        raise ExportError(str(exc)) from exc
    keys = ("embodiment", "fps", "action_names", "state_names", "cameras", "image_shapes")
    first = episodes[0].meta
    for ep in episodes[1:]:
        diff = [k for k in keys if ep.meta[k] != first[k]]
        if diff:
            raise ExportError(f"episode {ep.index} differs from episode {episodes[0].index} in {diff}; one dataset "
                              "holds one layout (record different setups under different roots)")
    features: dict[str, dict[str, Any]] = {
        f"{IMAGES_PREFIX}{cam}": {"dtype": "video" if use_videos else "image",
                                  "shape": tuple(first["image_shapes"][cam]), "names": ["height", "width", "channels"]}
        for cam in first["cameras"]}
    features.update({
        STATE: {"dtype": "float32", "shape": (len(first["state_names"]),), "names": list(first["state_names"])},
        ACTION: {"dtype": "float32", "shape": (len(first["action_names"]),), "names": list(first["action_names"])},
        "next.done": {"dtype": "bool", "shape": (1,), "names": None},
        SUCCESS: {"dtype": "bool", "shape": (1,), "names": None},
        "ros_stamp_ns": {"dtype": "int64", "shape": (1,), "names": None},
    })

    def fill(dataset: Any) -> None:
        for ep in episodes:
            n = len(ep)
            for i in range(n):
                last = i == n - 1
                frame: dict[str, Any] = {f"{IMAGES_PREFIX}{cam}": np.ascontiguousarray(ep.images[cam][i])
                                         for cam in ep.images}
                frame.update({STATE: ep.state[i], ACTION: ep.action[i], "next.done": np.array([last]),
                              SUCCESS: np.array([last and ep.success]),
                              "ros_stamp_ns": np.array([ep.stamp_ns[i]], dtype=np.int64), "task": ep.task[i]})
                dataset.add_frame(frame)
            dataset.save_episode()

    out = base / RECORDING_DATASET
    staged = base / f".{RECORDING_DATASET}.next"
    old = base / f".{RECORDING_DATASET}.old"
    for leftover in (staged, old):  # from a conversion that was interrupted
        shutil.rmtree(leftover, ignore_errors=True)
    common.write_dataset(str(staged), repo_id, int(first["fps"]), features, str(first["embodiment"]), use_videos,
                         fill)
    if out.exists():
        os.rename(out, old)
    os.rename(staged, out)
    shutil.rmtree(old, ignore_errors=True)
    frames = sum(len(ep) for ep in episodes)
    wins = sum(ep.success for ep in episodes)
    return (f"wrote {frames} frames in {len(episodes)} episodes ({wins} successful) to {out} (LeRobotDataset v3, "
            f"repo_id {repo_id}, robot_type {first['embodiment']}, {first['fps']} fps, cameras {first['cameras']}, "
            f"images {'AV1 video' if use_videos else 'PNG in parquet'})")


# ---------------------------------------------------------------- read: any dataset -> frames
def _resize(image: np.ndarray, size: int) -> np.ndarray:
    import cv2
    if image.shape[:2] == (size, size):
        return image
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)


def read_dataset(dataset_dir: str, out: str, image_size: int, camera: str | None = None,
                 repo_id: str = "local/dataset", prefer_camera: str | None = None,
                 cameras_wanted: list[str] | None = None) -> str:
    """Read the LeRobotDataset v3 at ``dataset_dir`` into the frames ``.npz`` ``out`` (module docstring);
    returns the summary line. Without ``camera``: the dataset's only camera, else ``prefer_camera`` (the
    robot's camera our model reads) when the dataset has it; ``cameras_wanted``: each of these cameras,
    in that order (a policy that reads several). Raises ExportError."""
    if image_size < 1:
        raise ExportError(f"--image-size must be >= 1, got {image_size}")
    root = Path(dataset_dir).expanduser().absolute()
    if not (root / "meta" / "info.json").is_file():
        raise ExportError(f"no LeRobotDataset at {str(root)!r} (meta/info.json is missing)", code=2)
    LeRobotDataset = common.import_lerobot_dataset()
    try:
        ds = LeRobotDataset(repo_id, root=root)
    except Exception as exc:  # noqa: BLE001 - LeRobot raises many kinds for a broken dataset
        raise ExportError(f"LeRobot cannot read the dataset at {str(root)!r}: {type(exc).__name__}: "
                          f"{str(exc).strip()}".replace("\n", " ")) from exc
    info = ds.meta.info
    features = info["features"]
    cameras = sorted(k[len(IMAGES_PREFIX):] for k in features if k.startswith(IMAGES_PREFIX))
    missing = [k for k in (STATE, ACTION) if k not in features]
    if missing:
        raise ExportError(f"the dataset at {str(root)!r} has no {' and no '.join(missing)} feature "
                          f"(it has {sorted(features)})")
    if cameras_wanted:
        absent = [c for c in cameras_wanted if c not in cameras]
        if absent:
            raise ExportError(f"the dataset has no camera {absent[0]!r} (it has {cameras})")
        read = list(cameras_wanted)
    else:
        if camera is None and prefer_camera in cameras:
            camera = prefer_camera
        if camera is None:
            if len(cameras) != 1:
                raise ExportError(f"the dataset has {len(cameras)} cameras ({cameras}); name the one to train on "
                                  "with --camera")
            camera = cameras[0]
        elif camera not in cameras:
            raise ExportError(f"the dataset has no camera {camera!r} (it has {cameras})")
        read = [camera]
    keys = [f"{IMAGES_PREFIX}{c}" for c in read]
    n = len(ds)
    image = np.zeros((n, *((len(read),) if cameras_wanted else ()), image_size, image_size, 3), dtype=np.uint8)
    state, action = [], []
    episode_index = np.zeros(n, dtype=np.int64)
    frame_index = np.zeros(n, dtype=np.int64)
    tasks = []
    success = np.zeros(n, dtype=bool) if SUCCESS in features else None
    for i in range(n):
        f = ds[i]
        views = [_resize(np.round(np.clip(f[key].numpy(), 0.0, 1.0).transpose(1, 2, 0) * 255.0).astype(np.uint8),
                         image_size) for key in keys]  # each (3, H, W) float in [0, 1] -> (S, S, 3) uint8
        image[i] = np.stack(views) if cameras_wanted else views[0]
        state.append(f[STATE].numpy().astype(np.float32).reshape(-1))
        action.append(f[ACTION].numpy().astype(np.float32).reshape(-1))
        episode_index[i] = int(f["episode_index"])
        frame_index[i] = int(f["frame_index"])
        tasks.append(str(f["task"]))
        if success is not None:
            success[i] = bool(f[SUCCESS].item())
    meta = {"fps": int(ds.fps), "robot_type": info.get("robot_type"), "codebase_version": info.get("codebase_version"),
            "camera": read[0] if not cameras_wanted else read, "cameras": cameras, "dataset": str(root),
            "features": {k: {"dtype": v["dtype"], "shape": list(v["shape"]), "names": v.get("names")}
                         for k, v in features.items()}}
    target = Path(out).expanduser().absolute()
    fd, tmp = tempfile.mkstemp(prefix=".frames-", suffix=".npz.tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            arrays: dict[str, Any] = {
                "image": image, "state": np.stack(state) if n else np.zeros((0, 0), np.float32),
                "action": np.stack(action) if n else np.zeros((0, 0), np.float32), "episode_index": episode_index,
                "frame_index": frame_index, "task": np.array(tasks, dtype=str), "meta": np.array(json.dumps(meta))}
            if success is not None:
                arrays["success"] = success
            np.savez(fh, **arrays)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return (f"read {n} frames of {ds.num_episodes} episodes from {root} (camera{'s' if len(read) > 1 else ''} "
            f"{', '.join(read)}, {int(ds.fps)} fps)")


# ---------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=PROG, description="Demonstrations <-> LeRobotDataset v3 (LeRobot's own code).")
    sub = ap.add_subparsers(dest="command", required=True)
    w = sub.add_parser("write", help="a demonstration set (.npz) -> a LeRobotDataset v3")
    w.add_argument("--demos", required=True, help="the demonstration set (.npz, hybridvla_ros.sim.demos)")
    w.add_argument("--out", required=True, help="the dataset's root directory; must not exist yet")
    w.add_argument("--joint-names", nargs="+", required=True, help="the commanded joints, in action order")
    w.add_argument("--state-names", nargs="*", default=[], help="the observed-only state joints")
    w.add_argument("--repo-id", default=DEFAULT_REPO_ID, help="the dataset's repo_id (nothing is pushed)")
    w.add_argument("--camera", default=DEFAULT_CAMERA, help="the image feature is observation.images.<camera>")
    w.add_argument("--cameras", nargs="+", default=None,
                   help="the names of a multi-camera recording's views, in recording order")
    w.add_argument("--video", action="store_true", help="AV1 video (PyAV) instead of lossless PNG in parquet")
    c = sub.add_parser("recording", help="episodes recorded by hybridvla record -> <root>/lerobot")
    c.add_argument("--root", required=True, help="the recording directory (hybridvla record --root)")
    c.add_argument("--repo-id", default="local/recording", help="the dataset's repo_id (nothing is pushed)")
    c.add_argument("--video", action="store_true", help="AV1 video (PyAV) instead of lossless PNG in parquet")
    r = sub.add_parser("read", help="a LeRobotDataset v3 -> frames (.npz)")
    r.add_argument("--dataset", required=True, help="the dataset's root directory")
    r.add_argument("--out", required=True, help="the frames file to write (.npz)")
    r.add_argument("--image-size", type=int, required=True, help="images are resized to S x S")
    r.add_argument("--camera", default=None, help="the camera to read (default: the dataset's only one)")
    r.add_argument("--prefer-camera", default=None, help="without --camera: this one when the dataset has several")
    r.add_argument("--cameras", nargs="+", default=None, help="read each of these cameras (a multi-camera policy)")
    return ap


def main(argv: list[str] | None = None) -> int:
    """Entry point; 0 on success, 2 for a missing input, 1 for any other error (one line on stderr)."""
    args = build_parser().parse_args(argv)
    common.prepare_lerobot_process()
    try:
        if args.command == "write":
            line = write_demos(args.demos, args.out, args.joint_names, args.state_names, args.repo_id, args.camera,
                               args.video, args.cameras)
        elif args.command == "recording":
            line = write_recording(args.root, args.repo_id, args.video)
        else:
            line = read_dataset(args.dataset, args.out, args.image_size, args.camera,
                                prefer_camera=args.prefer_camera, cameras_wanted=args.cameras)
    except ExportError as exc:
        print(f"{PROG} {args.command}: error: {exc}", file=sys.stderr)
        return exc.code
    except (ValueError, RuntimeError, OSError) as exc:  # from LeRobot's reader / writer
        print(f"{PROG} {args.command}: error: {type(exc).__name__}: {str(exc).strip()}".replace("\n", " "),
              file=sys.stderr)
        return 1
    print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
