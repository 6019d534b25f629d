"""Decode and encode ROS camera payloads as numpy arrays, without cv_bridge.

cv_bridge for ROS 2 cannot be installed in this environment (it is built
against the distro's own OpenCV/numpy and is not on PyPI), so this module
implements the small part of it we need on plain numpy + OpenCV:

* ``decode_raw``: ``sensor_msgs/Image`` fields -> (H, W, 3) uint8 RGB.
* ``decode_compressed``: ``sensor_msgs/CompressedImage`` -> (H, W, 3) uint8 RGB.
* ``encode_raw_rgb8`` / ``encode_compressed``: the reverse, for publishing.
* ``resize_for_policy``: square resize to the policy's input size.
* ``compressed_image_size``: a JPEG's or PNG's width and height from its header,
  without decoding it.

Every rejection is an ``ImageDecodeError`` whose ``reason`` is one of
``IMAGE_REJECT_REASONS``, so a node can count drops by reason. Both decoders take
``max_pixels``: a frame larger than that is refused before its pixels are touched (a
compressed one from its header, before the full decode), so one huge frame cannot stall
the pipeline.

Nothing here imports ROS, so it is unit-testable anywhere.
"""

from __future__ import annotations

import array
from typing import Any, Final

import cv2
import numpy as np

__all__ = [
    "ImageDecodeError",
    "IMAGE_REJECT_REASONS",
    "compressed_image_size",
    "RAW_ENCODINGS",
    "COMPRESSED_FORMATS",
    "decode_raw",
    "decode_compressed",
    "encode_raw_rgb8",
    "encode_compressed",
    "resize_for_policy",
]

BufferLike = bytes | bytearray | memoryview | array.array | np.ndarray


# Why a frame was refused (ImageDecodeError.reason):
# unsupported: an encoding or compression we do not decode; malformed: fields that contradict
# each other (size, step, data length), data that is not bytes; too_large: more pixels (or
# bytes) than the bound; undecodable: a compressed payload OpenCV cannot read.
IMAGE_REJECT_REASONS: Final[tuple[str, ...]] = ("unsupported", "malformed", "too_large", "undecodable")

# A compressed payload is at most this many bytes per allowed pixel (a 16-bit RGBA PNG stored
# raw is 8 bytes a pixel, plus headers): anything bigger is refused without reading it.
_MAX_BYTES_PER_PIXEL: Final[int] = 8
_MAX_HEADER_BYTES: Final[int] = 1 << 16


class ImageDecodeError(ValueError):
    """An image payload could not be turned into an (H, W, 3) uint8 RGB array.

    ``reason`` is one of IMAGE_REJECT_REASONS.
    """

    def __init__(self, message: str, reason: str = "malformed") -> None:
        super().__init__(message)
        self.reason = reason if reason in IMAGE_REJECT_REASONS else "malformed"


# encoding -> (channels, bytes per channel)
RAW_ENCODINGS: Final[dict[str, tuple[int, int]]] = {
    "rgb8": (3, 1),
    "bgr8": (3, 1),
    "rgba8": (4, 1),
    "bgra8": (4, 1),
    "mono8": (1, 1),
    "mono16": (1, 2),
}

# Compression names image_transport and cv2.imdecode both understand.
COMPRESSED_FORMATS: Final[dict[str, str]] = {"jpeg": ".jpg", "jpg": ".jpg", "png": ".png"}

# Applied to the uint8 view of the payload; None means the encoding needs more
# than a channel shuffle.
_TO_RGB: Final[dict[str, int | None]] = {
    "rgb8": None,
    "bgr8": cv2.COLOR_BGR2RGB,
    "rgba8": cv2.COLOR_RGBA2RGB,
    "bgra8": cv2.COLOR_BGRA2RGB,
    "mono8": cv2.COLOR_GRAY2RGB,
    "mono16": None,
}


def _as_byte_array(data: BufferLike, field: str) -> np.ndarray:
    """Flat uint8 view of ``data`` (no copy for contiguous buffers)."""
    if isinstance(data, np.ndarray):
        # rclpy may hand over uint8 arrays; other dtypes are reinterpreted as
        # their raw bytes, which is what the wire format holds.
        try:
            return np.ascontiguousarray(data).reshape(-1).view(np.uint8)
        except (TypeError, ValueError) as exc:
            raise ImageDecodeError(
                f"{field} array of dtype {str(data.dtype)!r} cannot be read as bytes: {exc}"
            ) from exc
    if isinstance(data, str):
        raise ImageDecodeError(f"{field} must be bytes-like, got str of length {len(data)}")
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except (TypeError, ValueError, BufferError) as exc:
        raise ImageDecodeError(
            f"{field} must be bytes-like (bytes, bytearray, memoryview, array.array, "
            f"numpy array), got {type(data).__name__!r}: {exc}"
        ) from exc


def _check_max_pixels(max_pixels: int | None) -> int | None:
    if max_pixels is None:
        return None
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, (int, np.integer)) or max_pixels <= 0:
        raise ValueError(f"max_pixels must be a positive int or None, got {max_pixels!r}")
    return int(max_pixels)


def _refuse_if_too_large(width: int, height: int, max_pixels: int | None, what: str) -> None:
    if max_pixels is not None and width * height > max_pixels:
        raise ImageDecodeError(
            f"{what} is {width}x{height} = {width * height} pixels, more than max_pixels={max_pixels}",
            "too_large",
        )


def _check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ImageDecodeError(f"{name} must be an int, got {value!r}")
    if value <= 0:
        raise ImageDecodeError(f"{name} must be > 0, got {value!r}")
    return int(value)


def _check_rgb_image(name: str, image: object) -> np.ndarray:
    if not isinstance(image, np.ndarray):
        raise ValueError(f"{name} must be a numpy array, got {type(image).__name__!r}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{name} must have shape (H, W, 3), got {image.shape!r}")
    if image.dtype != np.uint8:
        raise ValueError(f"{name} must be uint8, got dtype {str(image.dtype)!r}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"{name} must be non-empty, got shape {image.shape!r}")
    return image


def decode_raw(
    encoding: str,
    height: int,
    width: int,
    step: int,
    data: BufferLike,
    is_bigendian: int = 0,
    max_pixels: int | None = None,
) -> np.ndarray:
    """Decode ``sensor_msgs/Image`` fields into an (H, W, 3) uint8 RGB array.

    Supports rgb8, bgr8, rgba8, bgra8 (alpha dropped), mono8 (replicated to 3
    channels) and mono16 (top 8 bits, replicated; ``is_bigendian`` honoured).
    ``step`` is the row length in bytes, so padded rows decode correctly;
    bytes past ``step * height`` are ignored.

    rgb8 is returned zero-copy: the result is a view of ``data`` (read-only
    when ``data`` is immutable, and not C-contiguous when rows are padded).
    Copy it before writing to it or keeping it past the message's lifetime.
    Every other encoding returns a new C-contiguous array.

    Raises ImageDecodeError for an unknown encoding (reason 'unsupported'),
    more than ``max_pixels`` pixels ('too_large', checked before the data),
    non-positive height or width, ``step < width * channels * bytes_per_channel``,
    data that is not bytes-like, or data shorter than ``step * height``
    ('malformed'). Raises ValueError for a bad ``max_pixels``.
    """
    max_pixels = _check_max_pixels(max_pixels)
    layout = RAW_ENCODINGS.get(encoding) if isinstance(encoding, str) else None
    if layout is None:
        raise ImageDecodeError(
            f"encoding {encoding!r} is not supported; expected one of {sorted(RAW_ENCODINGS)}",
            "unsupported",
        )
    channels, bytes_per_channel = layout
    height = _check_positive_int("height", height)
    width = _check_positive_int("width", width)
    _refuse_if_too_large(width, height, max_pixels, f"{encoding!r} image")
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)):
        raise ImageDecodeError(f"step must be an int, got {step!r}")
    step = int(step)
    min_step = width * channels * bytes_per_channel
    if step < min_step:
        raise ImageDecodeError(
            f"step {step} is smaller than width * channels * bytes = {width} * {channels} * "
            f"{bytes_per_channel} = {min_step} for encoding {encoding!r}"
        )
    buf = _as_byte_array(data, "data")
    needed = step * height
    if buf.size < needed:
        raise ImageDecodeError(
            f"data has {buf.size} bytes but step * height = {step} * {height} = {needed} "
            f"are needed for a {width}x{height} {encoding!r} image"
        )

    if bytes_per_channel == 1:
        # Strided view over the payload: row padding is skipped by the stride,
        # nothing is copied.
        pixels = np.ndarray(
            shape=(height, width, channels),
            dtype=np.uint8,
            buffer=buf,
            strides=(step, channels, 1),
        )  # (H, W, C)
        code = _TO_RGB[encoding]
        if code is None:
            return pixels  # rgb8, (H, W, 3)
        if channels == 1:
            pixels = pixels[:, :, 0]  # (H, W); cvtColor wants 2-D for GRAY2RGB
        return cv2.cvtColor(pixels, code)  # (H, W, 3)

    # mono16: big-endian payloads are common from industrial cameras, so the
    # byte order comes from the message, not from this machine.
    dtype = np.dtype(">u2" if is_bigendian else "<u2")
    depth = np.ndarray(
        shape=(height, width),
        dtype=dtype,
        buffer=buf,
        strides=(step, 2),
    )  # (H, W)
    gray = (depth >> 8).astype(np.uint8)  # (H, W)
    return cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB)  # (H, W, 3)


def _parse_compressed_format(fmt: str) -> tuple[str, bool]:
    """Return (compression name, payload_is_rgb) for an image_transport format string.

    image_transport writes either a bare compression name ('jpeg', 'png') or
    '<raw encoding>; <compression> compressed <payload encoding>', e.g.
    'rgb8; jpeg compressed bgr8'. The payload encoding tells which channel
    order cv2.imdecode will hand back.
    """
    if not isinstance(fmt, str):
        raise ImageDecodeError(f"format must be a str, got {fmt!r}", "unsupported")
    text = fmt.strip().lower()
    if "compresseddepth" in text:
        raise ImageDecodeError(
            f"format {fmt!r} is a compressedDepth payload (depth image), which is not supported",
            "unsupported",
        )
    parts = [p.strip() for p in text.split(";")]
    if len(parts) == 1:
        spec = parts[0]
    elif len(parts) == 2:
        spec = parts[1]
    else:
        raise ImageDecodeError(f"format {fmt!r} is not an image_transport format string", "unsupported")
    tokens = spec.split()
    if not tokens or tokens[0] not in COMPRESSED_FORMATS:
        raise ImageDecodeError(
            f"format {fmt!r} names an unsupported compression; expected one of "
            f"{sorted(COMPRESSED_FORMATS)} (e.g. 'jpeg' or 'rgb8; jpeg compressed bgr8')",
            "unsupported",
        )
    # compressed_image_transport converts colour images to bgr8 before
    # encoding and says so; only an explicit 'compressed rgb...' means the
    # publisher encoded RGB-ordered channels directly.
    payload_is_rgb = len(tokens) >= 3 and tokens[1] == "compressed" and tokens[2].startswith("rgb")
    return tokens[0], payload_is_rgb


# JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic): they carry the size.
_JPEG_SOF: Final[frozenset[int]] = frozenset(
    {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
)
_PNG_SIGNATURE: Final[bytes] = b"\x89PNG\r\n\x1a\n"


def _jpeg_size(data: memoryview) -> tuple[int, int] | None:
    """(width, height) from a JPEG's start-of-frame segment, walking the segment lengths only."""
    n = len(data)
    if n < 4 or data[0] != 0xFF or data[1] != 0xD8:
        return None
    i = 2
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image or scan data before any frame header
            return None
        length = (data[i + 2] << 8) | data[i + 3]
        if marker in _JPEG_SOF:
            if i + 9 > n or length < 7:
                return None
            height = (data[i + 5] << 8) | data[i + 6]
            width = (data[i + 7] << 8) | data[i + 8]
            return width, height
        if length < 2:
            return None
        i += 2 + length
    return None


def _png_size(data: memoryview) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR chunk, which must come first."""
    if len(data) < 24 or bytes(data[:8]) != _PNG_SIGNATURE or bytes(data[12:16]) != b"IHDR":
        return None
    width = int.from_bytes(bytes(data[16:20]), "big")
    height = int.from_bytes(bytes(data[20:24]), "big")
    return width, height


def compressed_image_size(data: BufferLike) -> tuple[int, int] | None:
    """(width, height) a JPEG or PNG payload declares in its header, or None if it declares none.

    Reads only the header (segment lengths for JPEG, the IHDR chunk for PNG), never the
    pixels: cheap whatever the image's size. Raises ImageDecodeError if ``data`` is not
    bytes-like.
    """
    view = _as_byte_array(data, "data").data  # (N,) uint8: indexing gives ints
    return _jpeg_size(view) or _png_size(view)


def decode_compressed(
    format: str,  # noqa: A002 - ROS field name
    data: BufferLike,
    max_pixels: int | None = None,
) -> np.ndarray:
    """Decode a ``sensor_msgs/CompressedImage`` into an (H, W, 3) uint8 RGB array.

    ``format`` is accepted as image_transport writes it: 'jpeg', 'jpg', 'png',
    'rgb8; jpeg compressed bgr8', 'bgr8; png compressed bgr8',
    'mono8; jpeg compressed mono8', ... Grey and 16-bit payloads come back as
    8-bit RGB; alpha is dropped.

    With ``max_pixels``, a payload whose header declares more pixels, or that is
    longer than 8 bytes per allowed pixel, is refused before it is decoded; a
    payload whose header cannot be read is decoded and its size checked after.

    Raises ImageDecodeError with reason 'unsupported' for an unsupported format
    (including compressedDepth), 'too_large' for a payload over ``max_pixels``,
    'malformed' for data that is not bytes-like or empty, 'undecodable' for data
    OpenCV cannot decode. Raises ValueError for a bad ``max_pixels``.
    """
    max_pixels = _check_max_pixels(max_pixels)
    _, payload_is_rgb = _parse_compressed_format(format)
    buf = _as_byte_array(data, "data")
    if buf.size == 0:
        raise ImageDecodeError(f"data is empty for format {format!r}")
    if max_pixels is not None:
        max_bytes = max_pixels * _MAX_BYTES_PER_PIXEL + _MAX_HEADER_BYTES
        if buf.size > max_bytes:
            raise ImageDecodeError(
                f"data is {buf.size} bytes, more than a {max_pixels}-pixel image can take "
                f"({max_bytes} bytes); not decoded",
                "too_large",
            )
        size = compressed_image_size(buf)
        if size is not None:
            _refuse_if_too_large(size[0], size[1], max_pixels, f"{format!r} frame (from its header)")
    # IMREAD_COLOR always yields 8-bit, 3 channels, whatever the payload depth.
    decoded = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if decoded is None:
        head = bytes(buf[:8]).hex()
        raise ImageDecodeError(
            f"data ({buf.size} bytes, starting {head!r}) could not be decoded as format {format!r}",
            "undecodable",
        )
    _refuse_if_too_large(int(decoded.shape[1]), int(decoded.shape[0]), max_pixels, f"decoded {format!r} frame")
    if payload_is_rgb:
        return decoded  # (H, W, 3), already RGB
    return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)  # (H, W, 3)


def encode_raw_rgb8(image: np.ndarray) -> tuple[int, int, int, bytes]:
    """Return (height, width, step, data) of an rgb8 ``sensor_msgs/Image``.

    ``image`` is (H, W, 3) uint8 RGB; rows are packed (step = 3 * W).
    Raises ValueError when the shape or dtype is wrong.
    """
    image = _check_rgb_image("image", image)
    height, width = int(image.shape[0]), int(image.shape[1])
    return height, width, 3 * width, np.ascontiguousarray(image).tobytes()


def encode_compressed(image_rgb: np.ndarray, fmt: str = "jpeg", quality: int = 90) -> tuple[str, bytes]:
    """Return (format, data) of a ``sensor_msgs/CompressedImage``.

    ``image_rgb`` is (H, W, 3) uint8 RGB. ``fmt`` is 'jpeg'/'jpg' or 'png';
    the returned format string matches compressed_image_transport's, e.g.
    'rgb8; jpeg compressed bgr8', so decode_compressed and image_transport
    subscribers read it back with the right colours. ``quality`` (1..100) is
    the JPEG quality and is ignored for PNG, which is lossless.

    Raises ValueError for a bad shape/dtype, unknown fmt or quality out of
    range, and RuntimeError if OpenCV fails to encode.
    """
    image_rgb = _check_rgb_image("image_rgb", image_rgb)
    name = fmt.strip().lower() if isinstance(fmt, str) else None
    if name not in COMPRESSED_FORMATS:
        raise ValueError(f"fmt must be one of {sorted(COMPRESSED_FORMATS)}, got {fmt!r}")
    if name == "jpg":
        name = "jpeg"
    params: list[int] = []
    if name == "jpeg":
        if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)) or not 1 <= quality <= 100:
            raise ValueError(f"quality must be an int in 1..100, got {quality!r}")
        params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    bgr = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)  # (H, W, 3)
    ok, encoded = cv2.imencode(COMPRESSED_FORMATS[name], bgr, params)
    if not ok:
        raise RuntimeError(f"cv2.imencode failed for fmt {fmt!r} on an image of shape {image_rgb.shape!r}")
    return f"rgb8; {name} compressed bgr8", encoded.tobytes()


def resize_for_policy(image_rgb: np.ndarray, size: int) -> np.ndarray:
    """Return ``image_rgb`` resized to (size, size, 3) uint8 with cv2.INTER_AREA.

    The resize is a plain square stretch: the aspect ratio is not kept, so a
    caller that wants letterboxing or a centre crop must do it first. Returns the input
    unchanged (not copied) if it already has that size.
    Raises ValueError for a bad shape/dtype or a non-positive ``size``.
    """
    image_rgb = _check_rgb_image("image_rgb", image_rgb)
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size <= 0:
        raise ValueError(f"size must be a positive int, got {size!r}")
    size = int(size)
    if image_rgb.shape[0] == size and image_rgb.shape[1] == size:
        return image_rgb
    # OpenCV rejects negative strides (e.g. a [..., ::-1] view); padded rows are fine.
    if any(s < 0 for s in image_rgb.strides):
        image_rgb = np.ascontiguousarray(image_rgb)
    return cv2.resize(image_rgb, (size, size), interpolation=cv2.INTER_AREA)  # (size, size, 3)


def resize_views(images: np.ndarray, size: int) -> np.ndarray:
    """:func:`resize_for_policy` of one (H, W, 3) image, or of each view of a (K, H, W, 3) stack
    of camera views -> (K, size, size, 3)."""
    if isinstance(images, np.ndarray) and images.ndim == 4:
        return np.stack([resize_for_policy(view, size) for view in images])
    return resize_for_policy(images, size)


def camera_views(image_rgb: Any, cameras: tuple[str, ...]) -> list[Any]:
    """The images of one observation, one per camera a policy reads: ``cameras`` () -> [image_rgb];
    else ``image_rgb`` is K images (a sequence, or a (K, H, W, 3) array) in ``cameras`` order.
    ValueError for another count (each image is checked by the caller)."""
    if not cameras:
        return [image_rgb]
    views = list(image_rgb) if isinstance(image_rgb, (list, tuple)) or (
        isinstance(image_rgb, np.ndarray) and image_rgb.ndim == 4) else [image_rgb]
    if len(views) != len(cameras):
        raise ValueError(f"image_rgb: this policy reads {len(cameras)} cameras {list(cameras)}, "
                         f"got {len(views)} image(s)")
    return views
