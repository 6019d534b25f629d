"""Camera payload decoding/encoding without cv_bridge (hybridvla_ros.core.image)."""

from __future__ import annotations

import array
import time

import numpy as np
import pytest

from hybridvla_ros.core.image import (
    IMAGE_REJECT_REASONS,
    ImageDecodeError,
    compressed_image_size,
    decode_compressed,
    decode_raw,
    encode_compressed,
    encode_raw_rgb8,
    resize_for_policy,
)

H, W = 4, 5


@pytest.fixture
def rgb() -> np.ndarray:
    """A small image whose channels all differ, so a channel swap is visible."""
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8)  # (H, W, 3)


def _with_padding(rows: np.ndarray, pad_bytes: int) -> tuple[int, bytes]:
    """(step, data) for a (H, row_bytes) uint8 payload with junk after each row."""
    junk = np.full((rows.shape[0], pad_bytes), 0xAB, dtype=np.uint8)
    padded = np.concatenate([rows, junk], axis=1)
    return padded.shape[1], padded.tobytes()


# ---------------------------------------------------------------- decode_raw


def test_rgb8_decodes_unchanged(rgb: np.ndarray) -> None:
    out = decode_raw("rgb8", H, W, 3 * W, rgb.tobytes())
    assert out.shape == (H, W, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, rgb)


def test_bgr8_channels_are_swapped_to_rgb(rgb: np.ndarray) -> None:
    bgr = rgb[:, :, ::-1]
    out = decode_raw("bgr8", H, W, 3 * W, bgr.tobytes())
    np.testing.assert_array_equal(out, rgb)


@pytest.mark.parametrize("encoding, order", [("rgba8", [0, 1, 2]), ("bgra8", [2, 1, 0])])
def test_alpha_encodings_drop_alpha(rgb: np.ndarray, encoding: str, order: list[int]) -> None:
    alpha = np.full((H, W, 1), 7, dtype=np.uint8)
    payload = np.concatenate([rgb[:, :, order], alpha], axis=2)  # (H, W, 4)
    out = decode_raw(encoding, H, W, 4 * W, payload.tobytes())
    np.testing.assert_array_equal(out, rgb)


def test_mono8_is_replicated_to_three_channels() -> None:
    gray = np.arange(H * W, dtype=np.uint8).reshape(H, W)
    out = decode_raw("mono8", H, W, W, gray.tobytes())
    assert out.shape == (H, W, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], gray)


@pytest.mark.parametrize("is_bigendian, dtype", [(0, "<u2"), (1, ">u2")])
def test_mono16_keeps_high_byte_in_either_byte_order(is_bigendian: int, dtype: str) -> None:
    depth = (np.arange(H * W, dtype=np.uint32).reshape(H, W) * 3001 % 65536).astype(dtype)
    out = decode_raw("mono16", H, W, 2 * W, depth.tobytes(), is_bigendian=is_bigendian)
    expected = (depth.astype(np.uint32) >> 8).astype(np.uint8)
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], expected)


@pytest.mark.parametrize(
    "encoding, channels, to_payload",
    [
        ("rgb8", 3, lambda im: im),
        ("bgr8", 3, lambda im: im[:, :, ::-1]),
        ("rgba8", 4, lambda im: np.concatenate([im, np.zeros_like(im[:, :, :1])], axis=2)),
        ("mono8", 1, lambda im: im[:, :, :1]),
    ],
)
def test_padded_step_is_honoured(rgb: np.ndarray, encoding: str, channels: int, to_payload) -> None:
    if encoding == "mono8":
        rgb = np.repeat(rgb[:, :, :1], 3, axis=2)
    payload = np.ascontiguousarray(to_payload(rgb)).reshape(H, W * channels)
    step, data = _with_padding(payload, pad_bytes=7)
    out = decode_raw(encoding, H, W, step, data)
    np.testing.assert_array_equal(out, rgb)


def test_mono16_odd_padding_is_honoured() -> None:
    depth = np.arange(H * W, dtype="<u2").reshape(H, W) * 257
    step, data = _with_padding(depth.view(np.uint8).reshape(H, 2 * W), pad_bytes=3)
    out = decode_raw("mono16", H, W, step, data)
    np.testing.assert_array_equal(out[:, :, 0], (depth >> 8).astype(np.uint8))


@pytest.mark.parametrize(
    "wrap",
    [bytes, bytearray, memoryview, lambda b: array.array("B", b), lambda b: np.frombuffer(b, np.uint8)],
    ids=["bytes", "bytearray", "memoryview", "array.array", "ndarray"],
)
def test_all_ros_buffer_types_are_accepted(rgb: np.ndarray, wrap) -> None:
    out = decode_raw("bgr8", H, W, 3 * W, wrap(rgb[:, :, ::-1].tobytes()))
    np.testing.assert_array_equal(out, rgb)


def test_rgb8_is_zero_copy(rgb: np.ndarray) -> None:
    data = bytearray(rgb.tobytes())
    out = decode_raw("rgb8", H, W, 3 * W, data)
    data[0] = (data[0] + 1) % 256
    assert out[0, 0, 0] == data[0]


def test_extra_trailing_bytes_are_ignored(rgb: np.ndarray) -> None:
    out = decode_raw("rgb8", H, W, 3 * W, rgb.tobytes() + b"\x00" * 11)
    np.testing.assert_array_equal(out, rgb)


def test_unknown_encoding_names_it_and_lists_supported() -> None:
    with pytest.raises(ImageDecodeError, match=r"'yuv422'.*bgr8"):
        decode_raw("yuv422", H, W, 2 * W, bytes(2 * W * H))


def test_short_data_reports_sizes() -> None:
    with pytest.raises(ImageDecodeError, match=r"data has 59 bytes.*60"):
        decode_raw("rgb8", H, W, 3 * W, bytes(3 * W * H - 1))


def test_step_too_small_is_rejected() -> None:
    with pytest.raises(ImageDecodeError, match=r"step 14 .*15"):
        decode_raw("rgb8", H, W, 3 * W - 1, bytes(3 * W * H))


@pytest.mark.parametrize("height, width", [(0, W), (H, 0), (-1, W), (H, -3)])
def test_non_positive_size_is_rejected(height: int, width: int) -> None:
    with pytest.raises(ImageDecodeError, match=r"(height|width) must be > 0"):
        decode_raw("rgb8", height, width, 3 * W, bytes(3 * W * H))


def test_non_buffer_data_is_rejected() -> None:
    with pytest.raises(ImageDecodeError, match="bytes-like"):
        decode_raw("rgb8", H, W, 3 * W, "not bytes" * 10)


def test_vga_bgr8_decodes_well_under_a_millisecond() -> None:
    h, w = 480, 640
    data = np.random.default_rng(1).integers(0, 256, size=h * w * 3, dtype=np.uint8).tobytes()
    decode_raw("bgr8", h, w, 3 * w, data)  # warm-up
    times_s = []
    for _ in range(20):
        t0 = time.perf_counter()
        decode_raw("bgr8", h, w, 3 * w, data)
        times_s.append(time.perf_counter() - t0)
    # Typically ~0.03 ms; the bound leaves room for a loaded CI machine.
    assert float(np.median(times_s)) < 1e-3


# ---------------------------------------------------------- compressed images


@pytest.fixture
def smooth_rgb() -> np.ndarray:
    """A gradient with distinct channels: JPEG-friendly, so round-trip error stays small."""
    y, x = np.mgrid[0:48, 0:64]
    return np.stack([x * 4, y * 5, 255 - x * 2], axis=2).astype(np.uint8)  # (48, 64, 3)


def test_png_round_trip_is_exact(smooth_rgb: np.ndarray) -> None:
    fmt, data = encode_compressed(smooth_rgb, "png")
    assert fmt == "rgb8; png compressed bgr8"
    np.testing.assert_array_equal(decode_compressed(fmt, data), smooth_rgb)


def test_jpeg_round_trip_is_close_and_keeps_colour_order(smooth_rgb: np.ndarray) -> None:
    fmt, data = encode_compressed(smooth_rgb, "jpeg", quality=95)
    assert fmt == "rgb8; jpeg compressed bgr8"
    out = decode_compressed(fmt, data)
    assert out.shape == smooth_rgb.shape and out.dtype == np.uint8
    err = np.abs(out.astype(int) - smooth_rgb.astype(int))
    assert err.mean() < 2.0 and err.max() < 20
    # A red/blue swap would be off by ~100 on average, far above the JPEG error.
    assert np.abs(out[..., ::-1].astype(int) - smooth_rgb.astype(int)).mean() > 50


@pytest.mark.parametrize(
    "fmt",
    ["png", "PNG", "bgr8; png compressed bgr8", "rgb8; png compressed bgr8", " rgb8 ; png compressed bgr8 "],
)
def test_image_transport_format_strings_are_accepted(smooth_rgb: np.ndarray, fmt: str) -> None:
    _, data = encode_compressed(smooth_rgb, "png")
    np.testing.assert_array_equal(decode_compressed(fmt, data), smooth_rgb)


def test_payload_declared_rgb_is_not_swapped(smooth_rgb: np.ndarray) -> None:
    import cv2

    # A publisher that handed RGB straight to imencode and said so.
    ok, enc = cv2.imencode(".png", smooth_rgb)
    assert ok
    out = decode_compressed("rgb8; png compressed rgb8", enc.tobytes())
    np.testing.assert_array_equal(out, smooth_rgb)


def test_mono_jpeg_comes_back_as_three_equal_channels() -> None:
    import cv2

    gray = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (16, 1))  # (16, 64)
    ok, enc = cv2.imencode(".jpg", gray, [cv2.IMWRITE_JPEG_QUALITY, 100])
    assert ok
    out = decode_compressed("mono8; jpeg compressed mono8", enc.tobytes())
    assert out.shape == (16, 64, 3)
    np.testing.assert_array_equal(out[:, :, 0], out[:, :, 2])
    assert np.abs(out[:, :, 1].astype(int) - gray).max() <= 3


@pytest.mark.parametrize("fmt", ["bmp", "16UC1; compressedDepth png", "rgb8; tiff compressed bgr8", ""])
def test_unsupported_format_is_rejected_with_the_format(fmt: str) -> None:
    with pytest.raises(ImageDecodeError, match="format"):
        decode_compressed(fmt, b"\x89PNG")


def test_compressed_depth_says_so() -> None:
    with pytest.raises(ImageDecodeError, match="compressedDepth"):
        decode_compressed("16UC1; compressedDepth png", b"\x00" * 16)


@pytest.mark.parametrize("data", [b"", b"definitely not a jpeg", b"\xff\xd8\xff\xe0" + b"\x00" * 40])
def test_undecodable_data_is_rejected(data: bytes) -> None:
    with pytest.raises(ImageDecodeError, match="jpeg"):
        decode_compressed("rgb8; jpeg compressed bgr8", data)


def test_encode_compressed_validates_arguments(smooth_rgb: np.ndarray) -> None:
    with pytest.raises(ValueError, match="'gif'"):
        encode_compressed(smooth_rgb, "gif")
    with pytest.raises(ValueError, match="quality.*0"):
        encode_compressed(smooth_rgb, "jpeg", quality=0)
    with pytest.raises(ValueError, match=r"shape.*\(48, 64\)"):
        encode_compressed(smooth_rgb[:, :, 0], "png")


# ------------------------------------------------------------ raw encoding


def test_encode_raw_rgb8_round_trips(rgb: np.ndarray) -> None:
    height, width, step, data = encode_raw_rgb8(rgb)
    assert (height, width, step, len(data)) == (H, W, 3 * W, H * W * 3)
    np.testing.assert_array_equal(decode_raw("rgb8", height, width, step, data), rgb)


def test_encode_raw_rgb8_packs_non_contiguous_views(rgb: np.ndarray) -> None:
    height, width, step, data = encode_raw_rgb8(rgb[:, ::-1])
    np.testing.assert_array_equal(decode_raw("rgb8", height, width, step, data), rgb[:, ::-1])


def test_encode_raw_rgb8_rejects_wrong_dtype(rgb: np.ndarray) -> None:
    with pytest.raises(ValueError, match="'float32'"):
        encode_raw_rgb8(rgb.astype(np.float32))


# ------------------------------------------------------------------ resize


def test_resize_for_policy_gives_square_uint8() -> None:
    img = np.zeros((480, 640, 3), dtype=np.uint8)
    img[:, 320:] = (10, 200, 30)  # right half coloured
    out = resize_for_policy(img, 224)
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[:, :100], 0)
    np.testing.assert_array_equal(out[:, 124:], np.broadcast_to([10, 200, 30], (224, 100, 3)))


def test_resize_for_policy_accepts_decoded_views(rgb: np.ndarray) -> None:
    payload = rgb.reshape(H, 3 * W)
    step, data = _with_padding(payload, pad_bytes=5)
    padded_view = decode_raw("rgb8", H, W, step, data)
    np.testing.assert_array_equal(resize_for_policy(padded_view, 8), resize_for_policy(rgb.copy(), 8))
    np.testing.assert_array_equal(
        resize_for_policy(rgb[:, :, ::-1], 8), resize_for_policy(np.ascontiguousarray(rgb[:, :, ::-1]), 8)
    )


@pytest.mark.parametrize("size", [0, -4])
def test_resize_for_policy_rejects_bad_size(rgb: np.ndarray, size: int) -> None:
    with pytest.raises(ValueError, match=f"size must be a positive int, got {size}"):
        resize_for_policy(rgb, size)


# ------------------------------------------------ size bound and reasons (issue 18)

BIG_H, BIG_W = 3000, 4000
BOUND = 2048 * 2048


@pytest.fixture(scope="module")
def big_jpeg() -> bytes:
    import cv2

    return cv2.imencode(".jpg", np.zeros((BIG_H, BIG_W, 3), np.uint8))[1].tobytes()


@pytest.mark.parametrize("ext", [".jpg", ".png"])
def test_header_gives_the_size_without_decoding(smooth_rgb: np.ndarray, ext: str) -> None:
    import cv2

    data = cv2.imencode(ext, smooth_rgb)[1].tobytes()
    assert compressed_image_size(data) == (64, 48)
    assert compressed_image_size(np.frombuffer(data, np.uint8)) == (64, 48)


def test_header_size_skips_metadata_segments() -> None:
    """A JPEG with a 10 kB EXIF-like APP1 segment and fill bytes before its frame header."""
    import cv2

    data = cv2.imencode(".jpg", np.zeros((30, 40, 3), np.uint8))[1].tobytes()
    app1 = b"\xff\xe1" + (10_002).to_bytes(2, "big") + b"\x00" * 10_000
    assert compressed_image_size(data[:2] + app1 + b"\xff" + data[2:]) == (40, 30)


@pytest.mark.parametrize("data", [b"", b"\xff\xd8", b"\xff\xd8\xff\xda\x00\x02", b"\xff\xd8\xff\xe0\x00\x01",
                                  b"\x89PNG\r\n\x1a\n" + b"\x00" * 8, b"garbage" * 10])
def test_header_size_of_junk_is_none(data: bytes) -> None:
    assert compressed_image_size(data) is None


def test_a_huge_jpeg_is_refused_from_its_header_before_decoding(big_jpeg: bytes) -> None:
    """The measured case: a 4000x3000 JPEG. Refused in microseconds; decoding it takes hundreds of ms."""
    times_s = []
    for _ in range(5):
        t0 = time.perf_counter()
        with pytest.raises(ImageDecodeError, match="4000x3000") as info:
            decode_compressed("rgb8; jpeg compressed bgr8", big_jpeg, max_pixels=BOUND)
        times_s.append(time.perf_counter() - t0)
        assert info.value.reason == "too_large"
    assert min(times_s) < 5e-3  # the header walk only (~0.05 ms); a full decode is ~100x that
    # Within the bound it decodes as before.
    assert decode_compressed("jpeg", big_jpeg, max_pixels=BIG_H * BIG_W).shape == (BIG_H, BIG_W, 3)


def test_too_many_bytes_are_refused_before_reading_them() -> None:
    with pytest.raises(ImageDecodeError, match="bytes") as info:
        decode_compressed("jpeg", b"\x00" * (100 * 8 + 70_000), max_pixels=100)
    assert info.value.reason == "too_large"


def test_a_compressed_frame_without_a_readable_header_is_checked_after_decoding(smooth_rgb: np.ndarray) -> None:
    import cv2

    # OpenCV decodes by content: a BMP sent as 'jpeg' has no JPEG/PNG header to read first.
    data = cv2.imencode(".bmp", smooth_rgb)[1].tobytes()
    assert compressed_image_size(data) is None
    with pytest.raises(ImageDecodeError, match="decoded") as info:
        decode_compressed("jpeg", data, max_pixels=64 * 48 - 1)
    assert info.value.reason == "too_large"
    assert decode_compressed("jpeg", data, max_pixels=64 * 48).shape == (48, 64, 3)


def test_a_huge_raw_frame_is_refused_before_its_data_is_read() -> None:
    with pytest.raises(ImageDecodeError, match="4000x3000") as info:
        decode_raw("rgb8", BIG_H, BIG_W, BIG_W * 3, b"", max_pixels=BOUND)
    assert info.value.reason == "too_large"


@pytest.mark.parametrize(
    "call, reason",
    [
        (lambda: decode_raw("yuv422", 2, 2, 4, b"\x00" * 8), "unsupported"),
        (lambda: decode_raw("rgb8", 4, 4, 12, b"\x00" * 10), "malformed"),  # data too short for w*h*3
        (lambda: decode_raw("rgb8", 4, 4, 6, b"\x00" * 48), "malformed"),  # step < w*3
        (lambda: decode_raw("rgb8", 0, 4, 12, b""), "malformed"),
        (lambda: decode_raw("rgb8", 1, 1, 3, "abc"), "malformed"),
        (lambda: decode_compressed("bmp", b"BM"), "unsupported"),
        (lambda: decode_compressed("16UC1; compressedDepth png", b"\x00"), "unsupported"),
        (lambda: decode_compressed("jpeg", b""), "malformed"),
        (lambda: decode_compressed("jpeg", b"not a jpeg"), "undecodable"),
    ],
)
def test_every_rejection_has_a_reason(call, reason: str) -> None:
    assert reason in IMAGE_REJECT_REASONS
    with pytest.raises(ImageDecodeError) as info:
        call()
    assert info.value.reason == reason


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "10"])
def test_max_pixels_is_validated(bad) -> None:
    with pytest.raises(ValueError, match="max_pixels"):
        decode_raw("rgb8", 1, 1, 3, b"\x00" * 3, max_pixels=bad)
