"""Image classification data from TensorFlow Datasets (`cifar10`, `cifar100`, `tfds:NAME`).

TensorFlow and TFDS are imported inside the functions: importing `improve_nas.data` must stay
cheap and TensorFlow-free, because the augmentation layers run in model code on JAX.
"""

from __future__ import annotations

import numpy as np

from improve_nas.data.base import DataUnavailableError, ImageDataset, error_summary
from improve_nas.errors import UsageError

_SPLITS = ("train", "test")
# Splits are read in chunks and concatenated. `tfds.load(batch_size=-1)` would batch the whole
# split at once, but it sizes that batch from the split metadata and, where the size is unknown
# (mocked data, some community datasets), the process aborts in C++ (std::length_error).
_CHUNK = 4096


def load_tfds(name: str, *, data_dir: str | None = None, display_name: str | None = None
              ) -> ImageDataset:
    """Loads a TFDS image classification dataset whole into memory.

    The dataset needs an `image` feature of fixed shape, a `ClassLabel` `label` feature (for
    CIFAR-100 the 100 fine labels), supervised keys `(image, label)`, and `train` and `test`
    splits. It is downloaded and prepared into `data_dir` if not there yet.

    Args:
        name: TFDS name, optionally with config and version (`"cifar10"`, `"mnist:3.*.*"`).
        data_dir: TFDS data directory (local or `gs://`); None uses TFDS's default.
        display_name: Name for the returned data set; defaults to `name`.

    Returns:
        The train and test splits as uint8 images and int32 labels.

    Raises:
        UsageError: the name is not a TFDS dataset, or it is not image classification.
        DataUnavailableError: the data cannot be read or downloaded (never replaced by fake data).
    """
    tfds = _import_tfds(name, data_dir)
    builder = _builder(tfds, name, data_dir)
    image_shape, num_classes = _check_features(name, builder.info)
    try:
        splits = tfds.load(name, split=list(_SPLITS), data_dir=data_dir, as_supervised=True)
        (x_train, y_train), (x_test, y_test) = (_to_numpy(tfds, split) for split in splits)
    except Exception as error:  # Any TFDS/IO/download failure means the same thing to the user.
        raise _unavailable(name, data_dir, error) from error
    if len(x_train) == 0 or len(x_test) == 0:
        raise DataUnavailableError(f"TFDS dataset {name} in data_dir={_dir(data_dir)} has an empty "
                                   "train or test split")
    return ImageDataset(name=display_name or name, num_classes=num_classes, image_shape=image_shape,
                        x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)


def _import_tfds(name: str, data_dir: str | None):
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:
        raise _unavailable(name, data_dir, error) from error
    hide_gpus_from_tensorflow_under_other_backends()
    return tfds


def hide_gpus_from_tensorflow_under_other_backends() -> None:
    """Keeps TensorFlow off the GPUs when Keras trains on another backend (JAX).

    There TensorFlow only reads data, but by default it claims most of every GPU's memory as soon as its runtime
    starts, which would leave JAX short (the JAX container image holds both with CUDA libraries).
    """
    import keras

    if keras.backend.backend() == "tensorflow":
        return
    import tensorflow as tf

    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:  # TensorFlow's devices were set up earlier in this process: too late to change
        pass


def _builder(tfds, name: str, data_dir: str | None):
    try:
        return tfds.builder(name, data_dir=data_dir)
    except tfds.core.DatasetNotFoundError as error:
        raise UsageError(f"tfds:{name}: not a TFDS dataset ({error_summary(error)}); see "
                         "https://www.tensorflow.org/datasets/catalog") from None
    except Exception as error:
        raise _unavailable(name, data_dir, error) from error


def _check_features(name: str, info) -> tuple[tuple[int, int, int], int]:
    features = info.features
    names = list(features.keys())
    label = features["label"] if "label" in names else None
    if "image" not in names or getattr(label, "num_classes", None) is None:
        raise UsageError(f"tfds:{name}: needs an 'image' feature and a ClassLabel 'label' feature; "
                         f"it has {', '.join(names)}")
    image, num_classes = features["image"], label.num_classes
    shape = tuple(image.shape)
    if len(shape) != 3 or None in shape:
        raise UsageError(f"tfds:{name}: images have shape {shape}; only fixed-size [H, W, C] "
                         "images are supported")
    if np.dtype(getattr(image, "np_dtype", image.dtype)) != np.uint8:
        raise UsageError(f"tfds:{name}: images are {image.dtype}, only uint8 images are supported")
    if tuple(info.supervised_keys or ()) != ("image", "label"):
        raise UsageError(f"tfds:{name}: supervised keys are {info.supervised_keys}, "
                         "expected ('image', 'label')")
    # Split names are unknown until the data is prepared (and under mocking): check when known.
    missing = [split for split in _SPLITS if info.splits and split not in info.splits]
    if missing:
        raise UsageError(f"tfds:{name}: has splits {', '.join(info.splits)}; "
                         f"needs {', '.join(_SPLITS)}")
    return shape, int(num_classes)


def _to_numpy(tfds, split) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for image_chunk, label_chunk in tfds.as_numpy(split.batch(_CHUNK)):
        images.append(image_chunk)
        labels.append(label_chunk)
    if not images:
        return np.zeros((0, 0, 0, 0), np.uint8), np.zeros((0,), np.int32)
    return np.concatenate(images), np.concatenate(labels).astype(np.int32)


def _dir(data_dir: str | None) -> str:
    return data_dir or "<TFDS default, ~/tensorflow_datasets>"


def _unavailable(name: str, data_dir: str | None, error: BaseException) -> DataUnavailableError:
    return DataUnavailableError(
        f"cannot load TFDS dataset {name} from data_dir={_dir(data_dir)}: "
        f"{type(error).__name__}: {error_summary(error).rstrip('.')}. Fix: on a machine with internet run "
        f"`tfds build {name} --data_dir=DIR` (or tfds.load('{name}', data_dir=DIR)), copy DIR "
        "here if needed and pass --data_dir=DIR")
