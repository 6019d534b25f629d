"""Durable store of human corrections and a bounded replay buffer (ROS-free).

The MCAP export of a store is :mod:`hybridvla_ros.core.correction_export`.

Storage is SQLite in WAL mode with ``synchronous=FULL``: each :meth:`CorrectionStore.add`
is one transaction, and SQLite fsyncs the write-ahead log before the commit returns, so a
correction is on disk before it is counted. We use SQLite rather than an append-only file
of our own because it already does what such a file would have to be written and tested
for: checksummed WAL frames, so a write torn by SIGKILL or power loss is discarded on the
next open while every committed transaction survives; readers in other processes (the
adaptation worker) while the recorder writes; a clean ``SQLITE_FULL`` on a full disk; and
it is in the standard library. The in-memory replay buffer is a FIFO of the newest
``replay_capacity`` records, rebuilt from disk when a store is reopened.

:class:`CorrectionWriter` runs ``add`` on a background thread, so a slow disk (an fsync
can take tens of milliseconds on an SD card) never stalls the caller; it still counts a
correction only after its commit.

Images are stored as lossless PNG. Arrays are float64 little-endian blobs. The robot's other cameras
(``CorrectionRecord.extra_images``) are rows of ``correction_cameras`` written in the same transaction.

Size: one durability contract (schema and its migration, record checks, the store, the background
writer that counts only after the commit); splitting it would spread that contract over modules.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import cv2
import numpy as np

__all__ = [
    "CorrectionStoreError",
    "CorrectionRecord",
    "CorrectionStore",
    "CorrectionWriter",
    "records_to_arrays",
    "validate_record",
    "CORRECTION_TYPE",
    "CORRECTION_TOPIC",
]

# 2: the robot's other cameras (correction_cameras) and the anchor camera's name; a version-1 store is
# migrated in place when opened (its corrections keep one unnamed camera)
SCHEMA_VERSION = 2
CORRECTION_TYPE = "hybridvla_msgs/msg/Correction"
CORRECTION_TOPIC = "/corrections"

# load_arrays / records_to_arrays keys
IMAGES, PROPRIO, HUMAN_ACTION, PROPOSED_ACTION, HAS_PROPOSAL, STAMP_S, EPISODE_INDEX = (
    "images", "proprio", "human_action", "proposed_action", "has_proposal", "stamp_s", "episode_index")

_CREATE = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS corrections (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    stamp_s REAL NOT NULL,
    embodiment TEXT NOT NULL,
    instruction TEXT NOT NULL,
    session_id TEXT NOT NULL,
    episode_index INTEGER NOT NULL,
    image_png BLOB NOT NULL,
    joint_names TEXT NOT NULL,
    joint_positions BLOB NOT NULL,
    joint_velocities BLOB NOT NULL,
    wrench BLOB NOT NULL,
    proposed_action BLOB NOT NULL,
    human_action BLOB NOT NULL,
    frame_id TEXT NOT NULL,
    camera_name TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS correction_cameras (
    correction_id INTEGER NOT NULL REFERENCES corrections(id),
    camera TEXT NOT NULL,
    image_png BLOB NOT NULL,
    PRIMARY KEY (correction_id, camera)
);
"""
_COLUMNS = ("stamp_s", "embodiment", "instruction", "session_id", "episode_index", "image_png", "joint_names",
            "joint_positions", "joint_velocities", "wrench", "proposed_action", "human_action", "frame_id",
            "camera_name")


class CorrectionStoreError(RuntimeError):
    """The store cannot be opened or written (unwritable path, full disk, not a store); the message says which."""


@dataclasses.dataclass(frozen=True, eq=False)
class CorrectionRecord:
    """One human correction: what the robot saw, what the policy proposed, what the human did.

    ``proposed_action`` is empty (shape (0,)) when the policy had proposed nothing yet;
    ``wrench`` is empty or (force xyz, torque xyz).
    """

    stamp_s: float                   # time of the human command (ROS time, s)
    embodiment: str
    instruction: str
    image: np.ndarray                # (H, W, 3) uint8 RGB
    joint_positions: np.ndarray      # (D,) rad or m
    human_action: np.ndarray         # (D,)
    proposed_action: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))  # (D,) or (0,)
    session_id: str = ""
    episode_index: int = 0           # one override = one episode, within a session
    joint_names: tuple[str, ...] = ()
    joint_velocities: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))  # (D,) or (0,)
    wrench: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))  # (6,) or (0,)
    frame_id: str = ""
    camera_name: str = ""            # the camera of ``image`` (the embodiment's camera_name; '' in older stores)
    # the robot's other cameras that had a frame for this observation: camera -> (H, W, 3) uint8 RGB
    extra_images: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)

    @property
    def has_proposal(self) -> bool:
        """Whether the policy had proposed an action for this moment."""
        return self.proposed_action.size > 0


def _f64(values: Any, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array, got shape {arr.shape}")
    return arr


def validate_record(record: CorrectionRecord) -> None:
    """Raise ValueError naming the field if ``record`` cannot be stored or trained on."""
    img = record.image
    if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"image: expected (H, W, 3) uint8, got "
                         f"{getattr(img, 'shape', type(img))} {getattr(img, 'dtype', '')}")
    if img.shape[0] == 0 or img.shape[1] == 0:
        raise ValueError(f"image: empty image of shape {img.shape}")
    for camera, extra in record.extra_images.items():
        if not isinstance(camera, str) or not camera or camera == record.camera_name:
            raise ValueError(f"extra_images: camera names must be non-empty and not camera_name, got {camera!r}")
        if (not isinstance(extra, np.ndarray) or extra.ndim != 3 or extra.shape[2] != 3 or extra.dtype != np.uint8
                or 0 in extra.shape):
            raise ValueError(f"extra_images[{camera!r}]: expected non-empty (H, W, 3) uint8, got "
                             f"{getattr(extra, 'shape', type(extra))} {getattr(extra, 'dtype', '')}")
    human = _f64(record.human_action, "human_action")
    if human.size == 0 or not np.all(np.isfinite(human)):
        raise ValueError(f"human_action: needs finite values, got {human.tolist()}")
    joints = _f64(record.joint_positions, "joint_positions")
    if joints.size == 0 or not np.all(np.isfinite(joints)):
        raise ValueError(f"joint_positions: needs finite values, got {joints.tolist()}")
    proposed = _f64(record.proposed_action, "proposed_action")
    if proposed.size not in (0, human.size):
        raise ValueError(f"proposed_action: {proposed.size} values but human_action has {human.size}")
    if record.joint_names and len(record.joint_names) != joints.size:
        raise ValueError(f"joint_names: {len(record.joint_names)} names for {joints.size} joint positions")
    if _f64(record.wrench, "wrench").size not in (0, 6):
        raise ValueError(f"wrench: expected 0 or 6 values, got {np.asarray(record.wrench).size}")
    if not np.isfinite(record.stamp_s):
        raise ValueError(f"stamp_s: must be finite, got {record.stamp_s!r}")


def _encode_png(image: np.ndarray) -> bytes:
    # Level 1: a few times faster than the default 3 for ~10 % more bytes.
    ok, buf = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise ValueError(f"image: PNG encoding failed for shape {image.shape}")
    return buf.tobytes()


def _decode_png(data: bytes) -> np.ndarray:
    bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise CorrectionStoreError("a stored image could not be decoded (the store is damaged)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)  # (H, W, 3)


def _blob(values: Any) -> bytes:
    return np.asarray(values, dtype="<f8").tobytes()


def _unblob(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<f8").astype(np.float64)


@dataclasses.dataclass(frozen=True)
class _Row:
    """A record as kept in the replay buffer: the image still PNG-encoded, to stay small."""

    values: tuple[Any, ...]  # in _COLUMNS order
    extras: tuple[tuple[str, bytes], ...] = ()  # (camera, PNG) of the other cameras

    def record(self) -> CorrectionRecord:
        v = dict(zip(_COLUMNS, self.values))
        return CorrectionRecord(
            stamp_s=float(v["stamp_s"]), embodiment=v["embodiment"], instruction=v["instruction"],
            image=_decode_png(v["image_png"]), joint_positions=_unblob(v["joint_positions"]),
            human_action=_unblob(v["human_action"]), proposed_action=_unblob(v["proposed_action"]),
            session_id=v["session_id"], episode_index=int(v["episode_index"]),
            joint_names=tuple(json.loads(v["joint_names"])), joint_velocities=_unblob(v["joint_velocities"]),
            wrench=_unblob(v["wrench"]), frame_id=v["frame_id"], camera_name=v["camera_name"],
            extra_images={camera: _decode_png(png) for camera, png in self.extras})


def _describe_sqlite_error(path: str, exc: sqlite3.Error, doing: str) -> CorrectionStoreError:
    text = str(exc)
    code = getattr(exc, "sqlite_errorcode", None)
    if code == sqlite3.SQLITE_FULL or "full" in text:
        hint = "the disk (or the store's size limit) is full; free space or raise max_store_mb"
    elif "readonly" in text or "read-only" in text or code == sqlite3.SQLITE_READONLY:
        hint = "the file or its directory is read-only; choose a writable store_path"
    elif "unable to open" in text or code == sqlite3.SQLITE_CANTOPEN:
        hint = "the file cannot be created there; check that the directory exists and is writable"
    elif "not a database" in text or code == sqlite3.SQLITE_NOTADB:
        hint = "the file is not a correction store; move it away or choose another store_path"
    elif "malformed" in text or code == sqlite3.SQLITE_CORRUPT:
        hint = "the file is damaged; keep a copy and salvage it with `sqlite3 <file> .recover`"
    elif "locked" in text or "busy" in text:
        hint = "another process holds a write lock on the store"
    else:
        hint = "see the SQLite error"
    return CorrectionStoreError(f"correction store {path!r}: {doing} failed: {text} ({hint})")


class CorrectionStore:
    """All corrections on disk (SQLite) plus the newest ``replay_capacity`` of them in memory.

    Opening an existing store resumes it: :meth:`count` continues and the replay buffer is
    refilled from disk. Thread-safe. Raises CorrectionStoreError when the path cannot be
    created or written, or the file is not a store.
    """

    def __init__(self, path: str, replay_capacity: int, *, max_store_mb: float = 0.0) -> None:
        if replay_capacity < 0:
            raise ValueError(f"replay_capacity: must be >= 0, got {replay_capacity!r}")
        self.path = os.path.abspath(os.fspath(path))
        self.replay_capacity = int(replay_capacity)
        self._lock = threading.Lock()
        self._replay: collections.deque[_Row] = collections.deque(maxlen=self.replay_capacity)
        folder = os.path.dirname(self.path)
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            if isinstance(exc, (FileExistsError, NotADirectoryError)):
                blocker = folder
                while blocker and not os.path.exists(blocker):
                    blocker = os.path.dirname(blocker)
                reason = f"{blocker!r} is a file, not a directory"
            raise CorrectionStoreError(
                f"correction store {self.path!r}: cannot create directory {folder!r}: {reason} "
                "(choose a writable store_path)") from exc
        if not os.access(folder, os.W_OK | os.X_OK):
            # SQLite in WAL mode creates <path>-wal and <path>-shm beside the file.
            raise CorrectionStoreError(
                f"correction store {self.path!r}: directory {folder!r} is not writable "
                "(SQLite needs to create its journal there; choose a writable store_path)")
        try:
            self._conn = sqlite3.connect(self.path, timeout=5.0, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise _describe_sqlite_error(self.path, exc, "opening") from exc
        try:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            if max_store_mb > 0:
                page = self._conn.execute("PRAGMA page_size").fetchone()[0]
                self._conn.execute(f"PRAGMA max_page_count={max(int(max_store_mb * 2**20 // page), 1)}")
            self._conn.executescript("BEGIN IMMEDIATE;" + _CREATE + "COMMIT;")
            version = self._conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            if version is None:
                self._conn.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            elif int(version[0]) == 1:  # one camera: name the column of its camera, keep every correction
                self._conn.executescript(
                    "BEGIN IMMEDIATE; ALTER TABLE corrections ADD COLUMN camera_name TEXT NOT NULL DEFAULT ''; "
                    f"UPDATE meta SET value = '{SCHEMA_VERSION}' WHERE key = 'schema_version'; COMMIT;")
            elif int(version[0]) != SCHEMA_VERSION:
                raise CorrectionStoreError(
                    f"correction store {self.path!r}: schema version {version[0]}, this code reads {SCHEMA_VERSION}")
            self._count = int(self._conn.execute("SELECT COUNT(*) FROM corrections").fetchone()[0])
            if self.replay_capacity:
                rows = self._conn.execute(
                    f"SELECT id, {', '.join(_COLUMNS)} FROM corrections ORDER BY id DESC LIMIT ?",
                    (self.replay_capacity,)).fetchall()
                self._replay.extend(self._rows(list(reversed(rows))))
        except sqlite3.Error as exc:
            self._conn.close()
            raise _describe_sqlite_error(self.path, exc, "opening") from exc
        except CorrectionStoreError:
            self._conn.close()
            raise

    # --- writing
    def add(self, record: CorrectionRecord) -> int:
        """Commit ``record`` to disk (fsync'd), then add it to the replay buffer; returns the new total.

        Raises ValueError for a malformed record and CorrectionStoreError when the write
        fails (full disk, read-only file); the store stays usable after either.
        """
        validate_record(record)
        values = (
            float(record.stamp_s), record.embodiment, record.instruction, record.session_id,
            int(record.episode_index), _encode_png(record.image), json.dumps(list(record.joint_names)),
            _blob(record.joint_positions), _blob(record.joint_velocities), _blob(record.wrench),
            _blob(record.proposed_action), _blob(record.human_action), record.frame_id, record.camera_name)
        extras = tuple((camera, _encode_png(image)) for camera, image in record.extra_images.items())
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                row_id = self._conn.execute(
                    f"INSERT INTO corrections ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})",
                    values).lastrowid
                self._conn.executemany("INSERT INTO correction_cameras VALUES (?, ?, ?)",
                                       [(row_id, camera, png) for camera, png in extras])
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._conn.in_transaction:
                    try:
                        self._conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
                raise _describe_sqlite_error(self.path, exc, "writing a correction") from exc
            self._count += 1
            self._replay.append(_Row(values, extras))
            return self._count

    # --- reading
    def count(self) -> int:
        """Corrections committed to disk."""
        with self._lock:
            return self._count

    def iter_records(self, batch: int = 64) -> Iterator[CorrectionRecord]:
        """Every stored correction, oldest first, read from disk ``batch`` rows at a time."""
        last_id = 0
        while True:
            with self._lock:
                rows = self._conn.execute(
                    f"SELECT id, {', '.join(_COLUMNS)} FROM corrections WHERE id > ? ORDER BY id LIMIT ?",
                    (last_id, batch)).fetchall()
                found = self._rows(rows)
            if not rows:
                return
            last_id = rows[-1][0]
            for row in found:
                yield row.record()

    def replay_records(self) -> list[CorrectionRecord]:
        """The replay buffer: the newest ``replay_capacity`` corrections, oldest first."""
        with self._lock:
            rows = list(self._replay)
        return [r.record() for r in rows]

    def load_arrays(self, limit: int | None = None, image_size: int = 96) -> dict[str, np.ndarray]:
        """The newest ``limit`` corrections (all if None) as stacked training arrays, oldest first.

        See :func:`records_to_arrays` for the keys (the image of ``camera_name`` only); raises
        CorrectionStoreError if the stored corrections do not share one action dimension.
        """
        sql = f"SELECT {', '.join(_COLUMNS)} FROM corrections ORDER BY id DESC"
        args: tuple[Any, ...] = ()
        if limit is not None:
            sql += " LIMIT ?"
            args = (int(limit),)
        with self._lock:
            rows = self._conn.execute(sql, args).fetchall()
        return records_to_arrays([_Row(tuple(r)).record() for r in reversed(rows)], image_size)

    def _rows(self, rows: list[Any]) -> list[_Row]:
        """Rows of (id, *_COLUMNS) as _Rows with their other cameras' images (call holding the lock)."""
        extras: dict[int, list[tuple[str, bytes]]] = collections.defaultdict(list)
        ids = [r[0] for r in rows]
        for start in range(0, len(ids), 500):  # SQLite's limit on bound parameters
            part = ids[start:start + 500]
            for row_id, camera, png in self._conn.execute(
                    f"SELECT correction_id, camera, image_png FROM correction_cameras WHERE correction_id IN "
                    f"({', '.join('?' * len(part))}) ORDER BY rowid", part):
                extras[row_id].append((camera, png))
        return [_Row(tuple(r[1:]), tuple(extras.get(r[0], ()))) for r in rows]

    def replay_size(self) -> int:
        """Corrections in the replay buffer (at most ``replay_capacity``)."""
        with self._lock:
            return len(self._replay)

    def close(self) -> None:
        """Close the database (checkpointing the WAL into the main file)."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> CorrectionStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def record_views(record: CorrectionRecord, cameras: Sequence[str]) -> list[np.ndarray] | None:
    """The record's image of each of ``cameras`` (its own camera's ``image`` or one of its
    ``extra_images``), in that order; None when one of them had no frame for this correction."""
    views = []
    for camera in cameras:
        view = record.image if camera == record.camera_name else record.extra_images.get(camera)
        if view is None:
            return None
        views.append(view)
    return views


def records_to_arrays(records: Iterable[CorrectionRecord], image_size: int = 96,
                      cameras: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """Stack records for training.

    Returns ``images`` (N, S, S, 3) uint8 (resized with INTER_AREA; with ``cameras``, (N, K, S, S, 3):
    each record's view of each camera, see :func:`record_views`), ``proprio`` (N, D),
    ``human_action`` (N, D), ``proposed_action`` (N, D) with NaN rows where the policy had
    proposed nothing (see ``has_proposal`` (N,) bool), ``stamp_s`` (N,), ``episode_index``
    (N,). Raises CorrectionStoreError if the records have different dimensions or one lacks a camera.
    """
    records = list(records)
    S = int(image_size)
    if S < 1:
        raise ValueError(f"image_size: must be >= 1, got {image_size!r}")
    views_shape = (len(cameras),) if cameras else ()
    if not records:
        return {IMAGES: np.zeros((0, *views_shape, S, S, 3), np.uint8), PROPRIO: np.zeros((0, 0)),
                HUMAN_ACTION: np.zeros((0, 0)), PROPOSED_ACTION: np.zeros((0, 0)),
                HAS_PROPOSAL: np.zeros(0, bool), STAMP_S: np.zeros(0), EPISODE_INDEX: np.zeros(0, np.int64)}
    dims = {(r.joint_positions.size, r.human_action.size) for r in records}
    if len(dims) != 1:
        raise CorrectionStoreError(
            f"corrections of different (proprio, action) dimensions {sorted(dims)} cannot be stacked; "
            "keep one store per embodiment")
    D = records[0].human_action.size

    def fit(image: np.ndarray) -> np.ndarray:
        return image if image.shape[:2] == (S, S) else cv2.resize(image, (S, S), interpolation=cv2.INTER_AREA)

    if cameras:
        per_record = [record_views(r, cameras) for r in records]
        missing = [i for i, v in enumerate(per_record) if v is None]
        if missing:
            raise CorrectionStoreError(f"{len(missing)} corrections lack one of the cameras {list(cameras)}")
        images = np.stack([np.stack([fit(v) for v in views]) for views in per_record if views is not None])
    else:
        images = np.stack([fit(r.image) for r in records])  # (N, [K,] S, S, 3)
    proposed = np.full((len(records), D), np.nan)  # (N, D)
    for i, r in enumerate(records):
        if r.has_proposal:
            proposed[i] = r.proposed_action
    return {
        IMAGES: images,
        PROPRIO: np.stack([r.joint_positions for r in records]),       # (N, D)
        HUMAN_ACTION: np.stack([r.human_action for r in records]),     # (N, D)
        PROPOSED_ACTION: proposed,
        HAS_PROPOSAL: np.array([r.has_proposal for r in records]),     # (N,)
        STAMP_S: np.array([r.stamp_s for r in records]),               # (N,)
        EPISODE_INDEX: np.array([r.episode_index for r in records], dtype=np.int64),
    }


class CorrectionWriter:
    """Commits corrections on a background thread; the caller never waits for the disk.

    ``open_store`` is called now and, while it keeps failing, again at most every
    ``retry_open_s`` when a record arrives (a disk that comes back is picked up). After
    each commit ``on_commit(count, record, context)`` runs on the writer thread; after a
    failed write or open, ``on_error(exc, failures)``. A full queue drops the record
    (``dropped`` counts it) rather than block the caller.
    """

    def __init__(self, open_store: Callable[[], CorrectionStore], *,
                 on_commit: Callable[[int, CorrectionRecord, Any], None] | None = None,
                 on_error: Callable[[Exception, int], None] | None = None,
                 max_pending: int = 64, retry_open_s: float = 5.0) -> None:
        self._open_store = open_store
        self._on_commit = on_commit or (lambda count, record, context: None)
        self._on_error = on_error or (lambda exc, failures: None)
        self._retry_open_s = retry_open_s
        self._queue: queue.Queue[tuple[CorrectionRecord, Any] | None] = queue.Queue(maxsize=max_pending)
        self.store: CorrectionStore | None = None
        self.open_error: CorrectionStoreError | None = None
        self._last_open_try = -float("inf")
        self.failures = 0
        self.dropped = 0
        self.add_latency_s: collections.deque[float] = collections.deque(maxlen=1000)
        self._try_open()
        self._thread = threading.Thread(target=self._run, name="correction_writer", daemon=True)
        self._thread.start()

    def _try_open(self) -> bool:
        self._last_open_try = time.monotonic()
        try:
            self.store = self._open_store()
            self.open_error = None
            return True
        except CorrectionStoreError as exc:
            self.open_error = exc
            return False

    def submit(self, record: CorrectionRecord, context: Any = None) -> bool:
        """Queue ``record`` for commit; returns False (and counts it dropped) if the queue is full."""
        try:
            self._queue.put_nowait((record, context))
            return True
        except queue.Full:
            self.dropped += 1
            return False

    def pending(self) -> int:
        """Records waiting to be committed."""
        return self._queue.qsize()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            record, context = item
            if self.store is None:
                if time.monotonic() - self._last_open_try < self._retry_open_s or not self._try_open():
                    self.failures += 1
                    self._on_error(self.open_error or CorrectionStoreError("correction store is not open"),
                                   self.failures)
                    continue
            assert self.store is not None
            t0 = time.perf_counter()
            try:
                count = self.store.add(record)
            except (CorrectionStoreError, ValueError) as exc:
                self.failures += 1
                self._on_error(exc, self.failures)
                continue
            self.add_latency_s.append(time.perf_counter() - t0)
            try:
                self._on_commit(count, record, context)
            except Exception as exc:  # noqa: BLE001 - a publishing error must not stop the writer
                self._on_error(exc, self.failures)

    def close(self, timeout_s: float = 5.0) -> None:
        """Commit what is queued (up to ``timeout_s``), stop the thread, close the store."""
        try:
            self._queue.put(None, timeout=timeout_s)
        except queue.Full:
            pass
        self._thread.join(timeout_s)
        if self.store is not None and not self._thread.is_alive():
            self.store.close()
