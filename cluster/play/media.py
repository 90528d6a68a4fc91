"""Frames in and out of the play server: raw RGB for the page, GIF for recordings, PNG uploads.

Raw RGB (base64) rather than PNG for the page: a 64x64 frame is 12 KB, decoding needs no image
codec in the browser (it goes straight into an ImageData) and is lossless.
"""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

FRAME_SHAPE = (64, 64, 3)  # (H, W, C) uint8, CoinRun's frames (docs/design.md, 'The episode record')
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class MediaError(ValueError):
    """An uploaded image that is not a usable CoinRun frame; the message says why."""


def frame_to_b64(frame: np.ndarray) -> str:
    """uint8 frame (H, W, C) -> base64 of its raw RGB bytes (row-major)."""
    return base64.b64encode(np.ascontiguousarray(frame, dtype=np.uint8).tobytes()).decode("ascii")


def frame_from_b64(text: str, shape: tuple[int, int, int] = FRAME_SHAPE) -> np.ndarray:
    """Inverse of `frame_to_b64` -> uint8 (H, W, C)."""
    return np.frombuffer(base64.b64decode(text), dtype=np.uint8).reshape(shape).copy()


def frame_from_png(data: bytes) -> np.ndarray:
    """An uploaded PNG -> uint8 frame (64, 64, 3); anything else is a MediaError (never a crash)."""
    if not data.startswith(PNG_SIGNATURE):
        raise MediaError("the upload is not a PNG image (bad signature)")
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format != "PNG":
                raise MediaError(f"the upload is a {image.format} image, not PNG")
            if image.size != FRAME_SHAPE[1::-1]:
                raise MediaError(f"the upload is {image.size[0]}x{image.size[1]} pixels; a CoinRun frame is 64x64")
            return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()  # (64, 64, 3)
    except MediaError:
        raise
    except Exception as err:  # PIL raises many types for damaged files
        raise MediaError(f"the upload is not a readable PNG ({type(err).__name__}: {err})") from err


def frame_to_png(frame: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(frame, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def encode_gif(frames: list[np.ndarray], fps: float = 15.0, scale: int = 4) -> bytes:
    """uint8 frames [(H, W, C)] -> an animated GIF (nearest-neighbour upscaled by `scale`), looping."""
    if not frames:
        raise ValueError("a GIF needs at least one frame")
    images = []
    for frame in frames:
        image = Image.fromarray(np.ascontiguousarray(frame, dtype=np.uint8))
        if scale != 1:
            image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
        images.append(image)
    buffer = io.BytesIO()
    duration = max(20, int(round(1000.0 / fps)))  # GIF delays are in 10 ms units; browsers clamp < 20 ms
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], duration=duration, loop=0,
                   optimize=False, disposal=1)
    return buffer.getvalue()


def side_by_side(left: np.ndarray, right: np.ndarray, gap: int = 2) -> np.ndarray:
    """Two uint8 frames (H, W, C) -> one (H, 2W+gap, C) frame with a white gap (dream | real game)."""
    divider = np.full((left.shape[0], gap, left.shape[2]), 255, dtype=np.uint8)  # (H, gap, C)
    return np.concatenate([left, divider, right], axis=1)
