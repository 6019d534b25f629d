"""CorrectionStore: round trip, resume, replay bound, clear errors, SIGKILL durability, MCAP export."""
from __future__ import annotations

import os
import random
import select
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

from hybridvla_ros.core.correction_export import export_mcap
from hybridvla_ros.core.correction_store import (
    CORRECTION_TOPIC,
    CORRECTION_TYPE,
    CorrectionRecord,
    CorrectionStore,
    CorrectionStoreError,
    CorrectionWriter,
)

D = 7


def make_record(i: int, *, size: int = 32, proposal: bool = True, wrench: bool = False) -> CorrectionRecord:
    """A record whose every value encodes ``i`` so a read-back can be checked exactly."""
    rng = np.random.default_rng(i)
    return CorrectionRecord(
        stamp_s=1000.0 + 0.1 * i, embodiment="franka", instruction=f"reach {i}",
        image=rng.integers(0, 256, (size, size + 8, 3), dtype=np.uint8),
        joint_positions=np.arange(D) + 0.01 * i, human_action=np.arange(D) * -1.0 - i,
        proposed_action=np.full(D, 0.5 * i) if proposal else np.zeros(0),
        session_id="s1", episode_index=i // 3, joint_names=tuple(f"j{k}" for k in range(D)),
        joint_velocities=np.full(D, 0.1 * i), wrench=np.arange(6) * 1.0 + i if wrench else np.zeros(0),
        frame_id="cam")


def assert_same(a: CorrectionRecord, b: CorrectionRecord) -> None:
    assert a.stamp_s == b.stamp_s and a.embodiment == b.embodiment and a.instruction == b.instruction
    assert a.session_id == b.session_id and a.episode_index == b.episode_index and a.frame_id == b.frame_id
    assert a.joint_names == b.joint_names
    np.testing.assert_array_equal(a.image, b.image)  # PNG is lossless
    for name in ("joint_positions", "human_action", "proposed_action", "joint_velocities", "wrench"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def test_round_trip_and_training_arrays(tmp_path) -> None:
    records = [make_record(0), make_record(1, proposal=False), make_record(2, wrench=True)]
    with CorrectionStore(str(tmp_path / "c.sqlite"), replay_capacity=10) as store:
        assert [store.add(r) for r in records] == [1, 2, 3]
        assert store.count() == 3
        for got, want in zip(store.iter_records(batch=2), records, strict=True):
            assert_same(got, want)
        assert not list(store.iter_records())[1].has_proposal

        arrays = store.load_arrays(image_size=16)
        assert arrays["images"].shape == (3, 16, 16, 3) and arrays["images"].dtype == np.uint8
        np.testing.assert_array_equal(arrays["proprio"], np.stack([r.joint_positions for r in records]))
        np.testing.assert_array_equal(arrays["human_action"], np.stack([r.human_action for r in records]))
        assert arrays["has_proposal"].tolist() == [True, False, True]
        assert np.isnan(arrays["proposed_action"][1]).all()
        np.testing.assert_array_equal(arrays["proposed_action"][2], records[2].proposed_action)

        newest = store.load_arrays(limit=2, image_size=16)
        np.testing.assert_array_equal(newest["human_action"], arrays["human_action"][1:])
        assert store.load_arrays(limit=0)["images"].shape == (0, 96, 96, 3)


def test_reopen_resumes_count_and_rebuilds_replay(tmp_path) -> None:
    path = str(tmp_path / "c.sqlite")
    with CorrectionStore(path, replay_capacity=3) as store:
        for i in range(5):
            store.add(make_record(i))
    with CorrectionStore(path, replay_capacity=3) as store:
        assert store.count() == 5
        assert [r.stamp_s for r in store.replay_records()] == [make_record(i).stamp_s for i in (2, 3, 4)]
        assert store.add(make_record(5)) == 6
    with CorrectionStore(path, replay_capacity=100) as store:
        assert store.count() == 6 and store.replay_size() == 6


def test_replay_buffer_is_a_bounded_fifo(tmp_path) -> None:
    with CorrectionStore(str(tmp_path / "c.sqlite"), replay_capacity=4) as store:
        for i in range(10):
            store.add(make_record(i))
            assert store.replay_size() == min(i + 1, 4)
        replay = store.replay_records()
        for got, i in zip(replay, range(6, 10), strict=True):
            assert_same(got, make_record(i))
        assert store.count() == 10, "the disk keeps everything"
    with CorrectionStore(str(tmp_path / "none.sqlite"), replay_capacity=0) as store:
        store.add(make_record(0))
        assert store.replay_records() == [] and store.count() == 1


def test_unwritable_path_raises_a_clear_error(tmp_path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(CorrectionStoreError, match="cannot create directory") as info:
        CorrectionStore(str(blocker / "sub" / "c.sqlite"), 10)
    assert f"{str(blocker)!r} is a file, not a directory" in str(info.value) and "store_path" in str(info.value)

    with pytest.raises(CorrectionStoreError, match="not a correction store"):
        CorrectionStore(str(blocker), 10)  # an existing file that is not SQLite


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_directory_raises_a_clear_error(tmp_path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(CorrectionStoreError, match="not writable"):
            CorrectionStore(str(folder / "c.sqlite"), 10)
    finally:
        folder.chmod(0o755)


def test_full_disk_raises_keeps_what_was_counted_and_stays_usable(tmp_path) -> None:
    # SQLite's max_page_count makes it return SQLITE_FULL exactly as a full disk does.
    path = str(tmp_path / "c.sqlite")
    store = CorrectionStore(path, replay_capacity=100, max_store_mb=0.1)
    counted = 0
    with pytest.raises(CorrectionStoreError, match="full") as info:
        for i in range(1000):
            counted = store.add(make_record(i, size=64))
    assert path in str(info.value) and "max_store_mb" in str(info.value)
    assert counted > 0 and store.count() == counted and store.replay_size() == counted
    with pytest.raises(CorrectionStoreError, match="full"):
        store.add(make_record(counted, size=64))
    assert store.count() == counted
    store.close()
    with CorrectionStore(path, replay_capacity=100) as store:  # more room: writing goes on
        assert store.count() == counted
        assert store.add(make_record(counted)) == counted + 1
        assert len(list(store.iter_records())) == counted + 1


def test_a_write_error_from_sqlite_becomes_a_store_error(tmp_path, monkeypatch) -> None:
    store = CorrectionStore(str(tmp_path / "c.sqlite"), 10)
    store.add(make_record(0))

    class FailingConnection:
        def __init__(self, real: sqlite3.Connection) -> None:
            self.real = real

        @property
        def in_transaction(self) -> bool:
            return self.real.in_transaction

        def execute(self, sql: str, *args: object) -> object:
            if sql.startswith("INSERT"):
                raise sqlite3.OperationalError("disk I/O error")
            return self.real.execute(sql, *args)

    monkeypatch.setattr(store, "_conn", FailingConnection(store._conn))
    with pytest.raises(CorrectionStoreError, match="disk I/O error"):
        store.add(make_record(1))
    assert store.count() == 1
    monkeypatch.undo()
    assert store.add(make_record(1)) == 2
    store.close()


@pytest.mark.parametrize("field, value, match", [
    ("image", np.zeros((4, 4), np.uint8), "image"),
    ("image", np.zeros((4, 4, 3), np.float32), "image"),
    ("human_action", np.array([0.0, np.nan]), "human_action"),
    ("proposed_action", np.zeros(3), "proposed_action"),
    ("joint_positions", np.zeros(0), "joint_positions"),
])
def test_malformed_records_are_refused_by_name(tmp_path, field, value, match) -> None:
    import dataclasses

    with CorrectionStore(str(tmp_path / "c.sqlite"), 10) as store:
        with pytest.raises(ValueError, match=match):
            store.add(dataclasses.replace(make_record(0), **{field: value}))
        assert store.count() == 0


def test_writer_counts_only_after_commit_and_survives_an_unwritable_store(tmp_path) -> None:
    path = str(tmp_path / "later" / "c.sqlite")
    (tmp_path / "later").write_text("a file where the directory should be")
    committed: list[tuple[int, int]] = []
    errors: list[str] = []
    done = threading.Event()

    def on_commit(count: int, record: CorrectionRecord, context: object) -> None:
        # Another connection (as the adaptation worker would) already sees the record on disk.
        with sqlite3.connect(path) as other:
            committed.append((count, other.execute("SELECT COUNT(*) FROM corrections").fetchone()[0]))
        if context == "last":
            done.set()

    writer = CorrectionWriter(lambda: CorrectionStore(path, 10), on_commit=on_commit,
                              on_error=lambda exc, n: errors.append(str(exc)), retry_open_s=0.0)
    assert writer.store is None and "cannot create directory" in str(writer.open_error)
    assert writer.submit(make_record(0))
    deadline = time.monotonic() + 5
    while writer.failures < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert writer.failures == 1 and errors and "cannot create directory" in errors[0]

    (tmp_path / "later").unlink()  # the path becomes writable: the writer picks it up
    for i in range(1, 5):
        assert writer.submit(make_record(i), "last" if i == 4 else None)
    assert done.wait(10.0), errors
    writer.close()
    assert committed == [(1, 1), (2, 2), (3, 3), (4, 4)]
    with CorrectionStore(path, 10) as store:
        assert [r.stamp_s for r in store.iter_records()] == [make_record(i).stamp_s for i in range(1, 5)]


def test_writer_drops_rather_than_blocks_when_the_queue_is_full(tmp_path) -> None:
    gate = threading.Event()
    writer = CorrectionWriter(lambda: CorrectionStore(str(tmp_path / "c.sqlite"), 10),
                              on_commit=lambda *a: gate.wait(5.0), max_pending=2)
    results = [writer.submit(make_record(i)) for i in range(6)]
    assert results[:2] == [True, True] and not all(results) and writer.dropped >= 1
    gate.set()
    writer.close()


_ADDER = textwrap.dedent("""
    import sys
    import numpy as np
    from hybridvla_ros.core.correction_store import CorrectionRecord, CorrectionStore
    store = CorrectionStore(sys.argv[1], 8)
    rng = np.random.default_rng(int(sys.argv[2]))
    while True:
        n = store.count() + 1
        count = store.add(CorrectionRecord(
            stamp_s=float(n), embodiment="franka", instruction="durability",
            image=rng.integers(0, 256, (48, 48, 3), dtype=np.uint8),
            joint_positions=np.full(7, float(n)), human_action=np.full(7, -float(n)),
            proposed_action=np.full(7, 0.5 * n)))
        print(count, flush=True)
""")


def _last_count_printed(proc: subprocess.Popen[bytes], kill_after_s: float) -> int:
    """Read counts until the first one arrives plus ``kill_after_s``, SIGKILL, read what was already printed."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    buf = b""
    first_at: float | None = None
    deadline = time.monotonic() + 30.0
    while time.monotonic() < deadline:
        if first_at is not None and time.monotonic() - first_at >= kill_after_s:
            break
        ready, _, _ = select.select([fd], [], [], 0.005)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            buf += chunk
            if first_at is None and b"\n" in buf:
                first_at = time.monotonic()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    buf += proc.stdout.read()  # lines printed before the kill are still in the pipe
    counts = [int(line) for line in buf.decode().split("\n")[:-1]]  # a torn last line is not counted
    assert counts, f"the adder printed nothing; stderr: {proc.stderr.read().decode() if proc.stderr else ''}"
    return counts[-1]


def test_sigkill_never_loses_a_counted_correction(tmp_path) -> None:
    path = str(tmp_path / "durable.sqlite")
    rnd = random.Random(1234)
    last = 0
    for attempt in range(5):
        proc = subprocess.Popen([sys.executable, "-c", _ADDER, path, str(attempt)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        printed = _last_count_printed(proc, kill_after_s=rnd.uniform(0.0, 0.4))
        assert printed > last
        with CorrectionStore(path, 8) as store:
            assert store.count() >= printed, f"attempt {attempt}: counted {printed}, on disk {store.count()}"
            last = store.count()
            stamps = [r.stamp_s for r in store.iter_records()]
        assert stamps == [float(n) for n in range(1, last + 1)], "every correction readable, none twice"

    # A torn last write: garbage after the last WAL frame (or a WAL that is only garbage).
    proc = subprocess.Popen([sys.executable, "-c", _ADDER, path, "99"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    printed = _last_count_printed(proc, kill_after_s=0.2)
    with open(path + "-wal", "ab") as wal:
        wal.write(os.urandom(5000))
    with CorrectionStore(path, 8) as store:
        assert store.count() >= printed
        records = list(store.iter_records())
        assert len(records) == store.count()
        np.testing.assert_array_equal(records[-1].human_action, np.full(7, -float(len(records))))
        assert store.add(make_record(0)) == len(records) + 1


def test_add_latency_is_small(tmp_path) -> None:
    """An fsync'd commit of a 96x96 observation; the node still writes on a thread (disks vary)."""
    with CorrectionStore(str(tmp_path / "c.sqlite"), 100) as store:
        latencies = []
        for i in range(50):
            record = make_record(i, size=96)
            t0 = time.perf_counter()
            store.add(record)
            latencies.append(time.perf_counter() - t0)
    median_ms = float(np.median(latencies) * 1e3)
    print(f"add() latency: median {median_ms:.2f} ms, max {max(latencies) * 1e3:.2f} ms")
    assert median_ms < 100.0


def test_mcap_export_reads_back_as_ros2_corrections(tmp_path) -> None:
    mcap_reader = pytest.importorskip("mcap.reader")
    mcap_decoder = pytest.importorskip("mcap_ros2.decoder")
    records = [make_record(0), make_record(1, proposal=False), make_record(2, wrench=True), _with_cameras(3)]
    with CorrectionStore(str(tmp_path / "c.sqlite"), 10) as store:
        for r in records:
            store.add(r)
        out = str(tmp_path / "export" / "corrections.mcap")
        assert export_mcap(store, out) == 4

    with open(out, "rb") as f:
        reader = mcap_reader.make_reader(f, decoder_factories=[mcap_decoder.DecoderFactory()])
        assert reader.get_header().profile == "ros2"
        decoded = list(reader.iter_decoded_messages())
    assert len(decoded) == len(records)
    for (schema, channel, message, msg), want in zip(decoded, records, strict=True):
        assert schema.name == CORRECTION_TYPE and schema.encoding == "ros2msg"
        assert channel.topic == CORRECTION_TOPIC and channel.message_encoding == "cdr"
        assert message.log_time == int(round(want.stamp_s * 1e9))
        assert list(msg.human_action) == want.human_action.tolist()
        assert list(msg.proposed_action) == want.proposed_action.tolist()
        obs = msg.observation
        assert list(obs.joint_positions) == want.joint_positions.tolist()
        assert list(obs.joint_names) == list(want.joint_names)
        assert obs.instruction == want.instruction and obs.image.encoding == "rgb8"
        image = np.frombuffer(bytes(obs.image.data), np.uint8).reshape(obs.image.height, obs.image.width, 3)
        np.testing.assert_array_equal(image, want.image)
        assert obs.has_wrench == (want.wrench.size == 6)
        if obs.has_wrench:
            assert obs.wrench.torque.z == want.wrench[5]

    # The bytes are what ROS 2 itself would publish: rclpy's own deserializer reads them.
    serialization = pytest.importorskip("rclpy.serialization")
    msgs = pytest.importorskip("hybridvla_msgs.msg")
    with open(out, "rb") as f:
        raw = [m.data for _, _, m in mcap_reader.make_reader(f).iter_messages()]
    ros_msg = serialization.deserialize_message(raw[2], msgs.Correction)
    assert list(ros_msg.human_action) == records[2].human_action.tolist()
    assert ros_msg.observation.wrench.force.x == records[2].wrench[0]
    assert bytes(ros_msg.observation.image.data) == records[2].image.tobytes()
    obs = serialization.deserialize_message(raw[3], msgs.Correction).observation  # the robot's other cameras too
    assert obs.camera_name == "exterior" and list(obs.extra_camera_names) == ["wrist", "top"]
    for image, want in zip(obs.extra_images, records[3].extra_images.values(), strict=True):
        assert (image.height, image.width) == want.shape[:2] and bytes(image.data) == want.tobytes()


def _with_cameras(i: int, cameras: tuple[str, ...] = ("wrist", "top")) -> CorrectionRecord:
    import dataclasses

    rng = np.random.default_rng(100 + i)
    return dataclasses.replace(make_record(i), camera_name="exterior", extra_images={
        cam: rng.integers(0, 256, (16 + 4 * k, 24, 3), dtype=np.uint8) for k, cam in enumerate(cameras)})


def test_the_robots_other_cameras_are_stored_with_each_correction(tmp_path) -> None:
    """A multi-camera robot's correction keeps every camera the observation had, each at its own size, through
    the replay buffer, a re-open and iter_records; one without a stale camera keeps the others."""
    path = str(tmp_path / "c.sqlite")
    records = [_with_cameras(0), _with_cameras(1, ("wrist",)), make_record(2)]
    with CorrectionStore(path, replay_capacity=10) as store:
        for r in records:
            store.add(r)
        replay = store.replay_records()
    with CorrectionStore(path, replay_capacity=2) as store:
        for got_all in (replay, list(store.iter_records(batch=2)), [None, *store.replay_records()]):
            for got, want in zip(got_all, records, strict=True):
                if got is None:
                    continue
                assert_same(got, want)
                assert got.camera_name == want.camera_name and list(got.extra_images) == list(want.extra_images)
                for cam, image in want.extra_images.items():
                    np.testing.assert_array_equal(got.extra_images[cam], image)
        assert store.load_arrays()["images"].shape[0] == 3  # training reads the anchor camera


def test_a_store_from_before_camera_names_is_migrated_and_keeps_its_corrections(tmp_path) -> None:
    path = str(tmp_path / "v1.sqlite")
    with sqlite3.connect(path) as conn:  # schema version 1, as the previous release wrote it
        conn.executescript("""
            CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
            INSERT INTO meta VALUES ('schema_version', '1');
            CREATE TABLE corrections (id INTEGER PRIMARY KEY AUTOINCREMENT, stamp_s REAL NOT NULL,
                embodiment TEXT NOT NULL, instruction TEXT NOT NULL, session_id TEXT NOT NULL,
                episode_index INTEGER NOT NULL, image_png BLOB NOT NULL, joint_names TEXT NOT NULL,
                joint_positions BLOB NOT NULL, joint_velocities BLOB NOT NULL, wrench BLOB NOT NULL,
                proposed_action BLOB NOT NULL, human_action BLOB NOT NULL, frame_id TEXT NOT NULL);""")
        old = make_record(0)
        import cv2
        png = cv2.imencode(".png", cv2.cvtColor(old.image, cv2.COLOR_RGB2BGR))[1].tobytes()
        f8 = lambda a: np.asarray(a, "<f8").tobytes()  # noqa: E731
        conn.execute("INSERT INTO corrections VALUES (NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", (
            old.stamp_s, old.embodiment, old.instruction, old.session_id, old.episode_index, png,
            '["j0", "j1", "j2", "j3", "j4", "j5", "j6"]', f8(old.joint_positions), f8(old.joint_velocities),
            f8(old.wrench), f8(old.proposed_action), f8(old.human_action), old.frame_id))
    with CorrectionStore(path, replay_capacity=10) as store:
        assert store.count() == 1
        assert store.add(_with_cameras(1)) == 2
        got = list(store.iter_records())
    assert_same(got[0], old) and got[0].camera_name == "" and got[0].extra_images == {}
    assert got[1].camera_name == "exterior" and list(got[1].extra_images) == ["wrist", "top"]
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == "2"


def test_a_malformed_extra_camera_image_is_refused_by_name(tmp_path) -> None:
    import dataclasses

    with CorrectionStore(str(tmp_path / "c.sqlite"), replay_capacity=10) as store:
        for extra, match in [({"wrist": np.zeros((0, 4, 3), np.uint8)}, r"extra_images\['wrist'\]"),
                             ({"wrist": np.zeros((4, 4), np.uint8)}, r"extra_images\['wrist'\]"),
                             ({"exterior": np.zeros((4, 4, 3), np.uint8)}, "not camera_name")]:
            with pytest.raises(ValueError, match=match):
                store.add(dataclasses.replace(_with_cameras(0), extra_images=extra))
        assert store.count() == 0
