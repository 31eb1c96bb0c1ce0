"""DICOM files as 8-bit RGB images, the way a radiologist's viewer first shows them.

:func:`decode_dicom` reads the pixel data with pydicom, then, for greyscale images, follows the
DICOM display pipeline (PS3.3 C.11):

1. the Modality LUT (Rescale Slope/Intercept or a Modality LUT Sequence: stored values -> e.g. HU);
2. the VOI transform: the window given by the user (``--dicom-window center,width``, or the
   environment variable :data:`WINDOW_ENV`), else the file's first VOI LUT, else its first window
   (Window Center/Width with its VOI LUT Function), else the full range of the values (min-max);
3. scaling to 0-255 (the window formula's output range set to 8 bits) and, for MONOCHROME1
   (where 0 is white), inversion;
4. conversion to RGB. Colour files (RGB, YBR as pydicom converts them) keep their colours, scaled to
   8 bits.

A multi-frame file (a cine loop, a volume) is refused: which frame is "the image" is the user's
choice, so one frame per file is asked for. A compressed transfer syntax that no installed
decoder handles is refused naming the plugin to install. Both are :class:`UnreadableImage`, so
the image policy's consequences (one line, or ``--skip-bad``) apply as to any image.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from PIL import Image

from accvit_med.errors import UserError

DICOM_EXTENSIONS = frozenset({".dcm", ".dicom"})
WINDOW_ENV = "ACCVIT_MED_DICOM_WINDOW"
INSTALL_HINT = "pip install 'accvit-med[dicom]'"
# Decoders pydicom uses for compressed pixel data, by transfer syntax family.
_JPEG_PLUGINS = "pip install pylibjpeg pylibjpeg-libjpeg"
_JPEG2000_PLUGINS = "pip install pylibjpeg pylibjpeg-openjpeg"


def is_dicom(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in DICOM_EXTENSIONS


def parse_window(text: str) -> tuple[float, float]:
    """``"40,400"`` -> (center 40, width 400); a UserError naming the option otherwise."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        center, width = (float(p) for p in parts)
    except ValueError:
        raise UserError(f"--dicom-window must be CENTER,WIDTH (two numbers, e.g. 40,400), got '{text}'") from None
    if not (np.isfinite(center) and np.isfinite(width)) or width < 1:
        raise UserError(f"--dicom-window width must be a number of at least 1, got '{text}'")
    return center, width


def user_window() -> Optional[tuple[float, float]]:
    """The window of ``--dicom-window`` (kept in :data:`WINDOW_ENV`, so data-loader processes see it)."""
    text = os.environ.get(WINDOW_ENV, "").strip()
    return parse_window(text) if text else None


def check_run_window(recorded: Optional[Sequence[float]], run: str | os.PathLike) -> None:
    """UserError unless this process reads DICOM files as ``run`` was trained to: a run trained with
    ``--dicom-window`` sees other pixels under another window, or under each file's own."""
    if recorded is None:
        return
    trained = tuple(float(v) for v in recorded)
    current = user_window()
    if current != trained:
        given = "no --dicom-window" if current is None else f"--dicom-window {current[0]:g},{current[1]:g}"
        raise UserError(f"run '{run}' was trained with --dicom-window {trained[0]:g},{trained[1]:g} but this "
                        f"command has {given}; pass `accvit-med --dicom-window {trained[0]:g},{trained[1]:g} ...` "
                        "so its DICOM images get the pixels it learned from")


def cache_tag(path: str | os.PathLike) -> str:
    """What else decides a DICOM file's pixels (the user's window): part of the image-cache key."""
    if not is_dicom(path):
        return ""
    window = user_window()
    return "" if window is None else f"|window={window[0]:g},{window[1]:g}"


def window_8bit(values: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """PS3.3 C.11.2.1.2 (LINEAR), C.11.2.1.3.1 (SIGMOID), C.11.2.1.3.2 (LINEAR_EXACT), output 0-255."""
    x = np.asarray(values, dtype=np.float64)
    function = function.upper()
    if function == "SIGMOID":
        return 255.0 / (1.0 + np.exp(-4.0 * (x - center) / width))
    if function == "LINEAR":
        center, width = center - 0.5, width - 1.0
    if width <= 0:  # LINEAR with width 1: a threshold at the center
        return np.where(x <= center, 0.0, 255.0)
    return np.clip(((x - center) / width + 0.5) * 255.0, 0.0, 255.0)


def _first_value(ds, keyword: str) -> float:
    element = ds[keyword]
    return float(element.value[0] if element.VM > 1 else element.value)


def _scaled(values: np.ndarray, high: Optional[float] = None) -> np.ndarray:
    """0-255 over [0, high], or over the values' own range when ``high`` is None (min-max)."""
    values = np.asarray(values, dtype=np.float64)
    low = 0.0 if high is not None else float(values.min())
    high = float(values.max()) if high is None else float(high)
    return (values - low) / (high - low) * 255.0 if high > low else np.zeros_like(values)


def grey_8bit(ds, stored: np.ndarray, window: Optional[tuple[float, float]] = None) -> np.ndarray:
    """Modality LUT, then the VOI transform (``window``, the file's VOI LUT or window, or min-max),
    then MONOCHROME1 inversion: uint8 of the same shape as ``stored``."""
    from pydicom.pixels import apply_modality_lut, apply_voi

    values = apply_modality_lut(stored, ds)
    if window is not None:
        shown = window_8bit(values, *window)
    elif ds.get("VOILUTSequence"):
        lut = ds.VOILUTSequence[0]
        shown = _scaled(apply_voi(values, ds, index=0), 2 ** int(lut.LUTDescriptor[2]) - 1)
    elif "WindowCenter" in ds and "WindowWidth" in ds:
        shown = window_8bit(values, _first_value(ds, "WindowCenter"), _first_value(ds, "WindowWidth"),
                            str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR"))
    else:
        shown = _scaled(values)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        shown = 255.0 - shown
    return np.rint(np.clip(shown, 0.0, 255.0)).astype(np.uint8)


def colour_8bit(ds, pixels: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 of a colour image; more than 8 bits stored are scaled down."""
    bits = int(ds.get("BitsStored", 8) or 8)
    if pixels.dtype == np.uint8 or bits <= 8:
        return pixels.astype(np.uint8)
    return np.rint(_scaled(pixels, 2 ** bits - 1)).astype(np.uint8)


def _decoder_hint(ds) -> str:
    syntax = ds.file_meta.TransferSyntaxUID
    plugins = _JPEG2000_PLUGINS if "2000" in syntax.name else _JPEG_PLUGINS
    return f"compressed DICOM ({syntax.name}) and no installed decoder reads it; {plugins}"


def decode_dicom(path: str | os.PathLike, window: Optional[tuple[float, float]] = None) -> Image.Image:
    """The RGB image of a single-frame DICOM file (see the module docstring); UnreadableImage otherwise.

    window: (center, width) for greyscale images; default :func:`user_window`, then the file's own.
    """
    from accvit_med.datasets.imagepolicy import UnreadableImage

    try:
        import pydicom
        from pydicom.errors import InvalidDicomError
    except ImportError:
        raise UnreadableImage(path, f"DICOM support is not installed; {INSTALL_HINT}") from None
    try:
        ds = pydicom.dcmread(path)
    except InvalidDicomError:
        raise UnreadableImage(path, "not a DICOM file") from None
    except (OSError, ValueError, EOFError, KeyError, TypeError) as err:
        raise UnreadableImage(path, _first_line(err)) from None
    if "PixelData" not in ds:
        raise UnreadableImage(path, "DICOM file without pixel data")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise UnreadableImage(path, f"multi-frame DICOM ({frames} frames); save the frame to use as its own file")
    rows, columns = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    if rows * columns > Image.MAX_IMAGE_PIXELS:
        raise UnreadableImage(path, f"decompression bomb ({columns}x{rows} pixels, more than {Image.MAX_IMAGE_PIXELS})")
    if rows < 1 or columns < 1:
        raise UnreadableImage(path, "empty image (0 pixels)")
    try:
        pixels = ds.pixel_array
    except Exception as err:  # pydicom's decoders raise RuntimeError, ValueError, NotImplementedError...
        if ds.file_meta.TransferSyntaxUID.is_compressed and "plugin" in str(err).lower():
            raise UnreadableImage(path, _decoder_hint(ds)) from None
        raise UnreadableImage(path, _first_line(err)) from None
    if int(ds.get("SamplesPerPixel", 1) or 1) == 1:
        grey = grey_8bit(ds, pixels, window if window is not None else user_window())
        return Image.fromarray(grey, mode="L").convert("RGB")
    return Image.fromarray(colour_8bit(ds, pixels), mode="RGB")


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
