"""`improve-nas predict MODEL_DIR IMAGES`: classes and probabilities of an exported ensemble, as CSV or JSON.

IMAGES is an `.npz` (the array `x`, `images` or `x_test`, or its only array), an `.npy`, or a folder of PNG/JPEG
files (read with Pillow, converted to the model's channel count, never resized). They must be what the export takes
(`improve_nas.serving`): uint8 [N, H, W, C] of the training shape; anything else is one line naming what was given.
The files are read and checked for dtype and rank before Keras is imported.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys

import numpy as np

from improve_nas.errors import UsageError

FORMATS = ("csv", "json")
NPZ_KEYS = ("x", "images", "x_test")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def run(model_dir: str, images_path: str, *, output_format: str = "csv", out: str | None = None) -> int:
    """Classifies the images at `images_path` with the export of `model_dir`; writes to `out` or stdout.

    Returns the number of images classified.
    """
    if output_format not in FORMATS:
        raise UsageError(f"--format={output_format!r} is invalid; choose one of: {', '.join(FORMATS)}")
    from improve_nas.api import load_model  # before the images: a missing export is the first thing to say

    folder = os.path.isdir(images_path)
    if not folder:  # dtype and rank checked in a fraction of a second, before Keras starts
        images, names = read_images(images_path, channels=None)
        check_images(images, None, images_path)
    model = load_model(model_dir)
    image_shape = tuple(model.image_shape)
    if folder:  # read once the channel count is known, to convert every file to it
        images, names = read_images(images_path, channels=image_shape[-1])
    check_images(images, image_shape, images_path)
    probabilities = np.asarray(model.predict(images, verbose=0)["probabilities"], dtype=np.float64)
    text = format_csv(names, probabilities) if output_format == "csv" else format_json(names, probabilities)
    if out:
        with open(out, "w", encoding="utf-8") as file:
            file.write(text)
    else:
        sys.stdout.write(text)
    return len(images)


def read_images(path: str, *, channels: int | None) -> tuple[np.ndarray, list[str]]:
    """The image array at `path` and one name per image (file names for a folder, row numbers otherwise)."""
    if os.path.isdir(path):
        return _read_folder(path, channels)
    if not os.path.isfile(path):
        raise UsageError(f"IMAGES {path!r} does not exist; give an .npz, an .npy or a folder of PNG/JPEG images")
    try:
        if path.endswith(".npz"):
            with np.load(path, allow_pickle=False) as archive:
                images = _npz_images(path, archive)
        elif path.endswith(".npy"):
            images = np.load(path, allow_pickle=False)
        else:
            raise UsageError(f"IMAGES {path!r} is neither .npz, .npy nor a folder of PNG/JPEG images")
    except (OSError, ValueError) as error:
        if isinstance(error, UsageError):
            raise
        raise UsageError(f"cannot read {path!r} ({type(error).__name__}: {str(error).splitlines()[0][:200]})") \
            from None
    return images, [str(i) for i in range(len(images))] if images.ndim else []


def _npz_images(path: str, archive) -> np.ndarray:
    keys = list(archive.keys())
    key = next((k for k in NPZ_KEYS if k in keys), keys[0] if len(keys) == 1 else None)
    if key is None:
        raise UsageError(f"{path!r} holds arrays {', '.join(keys) or '(none)'}; name the images one of "
                         f"{', '.join(NPZ_KEYS)}, or keep only one array in it")
    return archive[key]


def _read_folder(path: str, channels: int | None) -> tuple[np.ndarray, list[str]]:
    names = sorted(name for name in os.listdir(path) if name.lower().endswith(IMAGE_SUFFIXES))
    if not names:
        raise UsageError(f"folder {path!r} holds no {', '.join(IMAGE_SUFFIXES)} images")
    try:
        from PIL import Image
    except ImportError:
        raise UsageError("reading a folder of images needs Pillow (pip install pillow); or pass an .npz or .npy "
                         "of uint8 images") from None
    mode = {1: "L", 3: "RGB", 4: "RGBA"}.get(channels)
    arrays = []
    for name in names:
        try:
            with Image.open(os.path.join(path, name)) as image:
                pixels = np.asarray(image.convert(mode) if mode else image)
        except OSError as error:
            raise UsageError(f"cannot read image {os.path.join(path, name)!r} ({error})") from None
        pixels = pixels[..., None] if pixels.ndim == 2 else pixels
        if arrays and pixels.shape != arrays[0].shape:
            raise UsageError(f"images of folder {path!r} differ in size: {names[0]} is {list(arrays[0].shape)}, "
                             f"{name} is {list(pixels.shape)}; resize them to the training image size first")
        arrays.append(pixels)
    return np.stack(arrays), names


def check_images(images: np.ndarray, image_shape: tuple | None, path: str) -> None:
    """One line unless `images` is uint8 [N, *image_shape] (any [N, H, W, C] while `image_shape` is None)."""
    if images.dtype == np.uint8 and images.ndim == 4 and image_shape in (None, tuple(images.shape[1:])):
        return
    expected = "H, W, C" if image_shape is None else ", ".join(map(str, image_shape))
    raise UsageError(f"{path!r} holds {images.dtype} {list(images.shape)}; the model takes uint8 images "
                     f"[N, {expected}] (raw pixels 0..255 at the training size)")


def format_csv(names: list[str], probabilities: np.ndarray) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["image", "class", "probability"] + [f"p{k}" for k in range(probabilities.shape[1])])
    for name, row in zip(names, probabilities):
        k = int(np.argmax(row))
        writer.writerow([name, k, f"{row[k]:.6f}"] + [f"{p:.6f}" for p in row])
    return buffer.getvalue()


def format_json(names: list[str], probabilities: np.ndarray) -> str:
    return json.dumps([{"image": name, "class": int(np.argmax(row)), "probability": float(row.max()),
                        "probabilities": [float(p) for p in row]} for name, row in zip(names, probabilities)]) + "\n"
