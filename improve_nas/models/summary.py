"""Parameter counts, multiply-adds and per-stage shapes of a NASNet, for `improve-nas summary`."""

from __future__ import annotations

import math

import keras

from improve_nas.errors import UsageError
from improve_nas.models.genotype import CellGenotype
from improve_nas.models.nasnet import NASNet


def summarize(*, num_classes: int, image_shape: tuple[int, int, int] = (32, 32, 3),
              normal_genotype: CellGenotype | dict | None = None, reduction_genotype: CellGenotype | dict | None = None,
              **nasnet_kwargs) -> dict:
    """Describes the NASNet that ``NASNet(num_classes=..., **nasnet_kwargs)`` builds on ``image_shape`` images.

    The model is built (weights created, nothing run) with the aux head whatever
    ``use_aux_head`` says, so both parameter counts can be given.

    Multiply-add convention: one multiply-add per kernel weight per output position of
    every convolution (SAME-padded border positions count in full), depthwise and
    pointwise parts of separable convolutions counted separately, and ``in * out`` per
    dense layer; batch norm, pooling, activations, additions and biases are not counted.
    Per image, inference graph (no aux head).

    Args:
        num_classes: Number of logits.
        image_shape: ``(height, width, channels)`` of one input image.
        normal_genotype: The normal cell (`CellGenotype` or its config dict); None is NASNet-A's.
        reduction_genotype: The reduction cell, likewise.
        **nasnet_kwargs: Any other `NASNet` constructor argument.

    Returns:
        A JSON-ready dict: ``num_classes``, ``image_shape``, ``trainable_params`` (without
        aux head), ``trainable_params_with_aux_head`` (None when the network has fewer
        than 2 reduction cells, so no aux head), ``non_trainable_params`` (batch-norm
        moving means and variances, without aux head), ``multiply_adds``, and ``stages``:
        one row per stem / cell / logits layer with ``name``, ``kind``, ``output_shape``
        ``[H, W, C]``, ``params`` (trainable) and ``multiply_adds``; the rows' params and
        multiply-adds add up to the totals.
    """
    image_shape = tuple(image_shape)
    if len(image_shape) != 3 or not all(isinstance(d, int) and d >= 1 for d in image_shape):
        raise UsageError(f"image_shape={image_shape!r} is invalid; it must be three positive integers (H, W, C)")
    model = NASNet(num_classes=num_classes, normal_genotype=normal_genotype, reduction_genotype=reduction_genotype,
                   **{**nasnet_kwargs, "use_aux_head": True})
    model.build((None, *image_shape))

    aux_head = getattr(model, "aux_head", None)
    aux_params = _count(aux_head.trainable_weights) if aux_head is not None else 0
    moving_stats = [w for w in model.non_trainable_weights if w is not model.training_step]
    aux_stats = aux_head.non_trainable_weights if aux_head is not None else []

    stages = [_stage("stem", "stem", _stem_shape(model, image_shape), [model.stem_conv, model.stem_bn])]
    height, width = image_shape[:2]
    for spec, cell in zip(model.plan.cells, model.cells):
        if spec.strides > 1:
            height, width = -(-height // spec.strides), -(-width // spec.strides)
        stages.append(_stage(cell.name, spec.kind, [height, width, spec.output_channels], [cell]))
    stages.append(_stage("logits", "dense", [num_classes], [model.classifier]))

    trainable = _count(model.trainable_weights) - aux_params
    assert trainable == sum(row["params"] for row in stages), "every trainable weight belongs to one stage"
    return {
        "num_classes": num_classes,
        "image_shape": list(image_shape),
        "trainable_params": trainable,
        "trainable_params_with_aux_head": trainable + aux_params if aux_head is not None else None,
        "non_trainable_params": _count(moving_stats) - _count(aux_stats),
        "multiply_adds": sum(row["multiply_adds"] for row in stages),
        "stages": stages,
    }


def format_summary(summary: dict) -> str:
    """A readable table of `summarize`'s result (extra keys are ignored)."""
    header = f"{'stage':<18} {'kind':<10} {'output':>14} {'params':>12} {'mult-adds':>15}"
    lines = [header, "-" * len(header)]
    for row in summary["stages"]:
        shape = "x".join(str(d) for d in row["output_shape"])
        lines.append(
            f"{row['name']:<18} {row['kind']:<10} {shape:>14} {row['params']:>12,} {row['multiply_adds']:>15,}"
        )
    lines.append("-" * len(header))
    with_aux = summary["trainable_params_with_aux_head"]
    lines.append(f"trainable params:        {summary['trainable_params']:,}")
    lines.append(f"  with aux head:         {'(no aux head)' if with_aux is None else f'{with_aux:,}'}")
    lines.append(f"batch-norm moving stats: {summary['non_trainable_params']:,}")
    lines.append(f"multiply-adds per image: {summary['multiply_adds']:,}")
    return "\n".join(lines)


def _count(weights) -> int:
    return sum(math.prod(w.shape) for w in weights)


def _stem_shape(model: NASNet, image_shape) -> list[int]:
    return [image_shape[0], image_shape[1], model.plan.stem_filters]


def _stage(name: str, kind: str, output_shape: list[int], layers: list) -> dict:
    return {
        "name": name,
        "kind": kind,
        "output_shape": output_shape,
        "params": sum(_count(layer.trainable_weights) for layer in layers),
        "multiply_adds": sum(_multiply_adds(layer) for layer in layers),
    }


def _multiply_adds(layer: keras.layers.Layer) -> int:
    """Multiply-adds of one image through ``layer`` and everything inside it."""
    total = 0
    # `_flatten_layers` is how Keras' own `summary` walks nested layers; there is no public walker.
    for sublayer in layer._flatten_layers(include_self=True, recursive=True):
        if isinstance(sublayer, keras.layers.Dense):
            total += math.prod(sublayer.kernel.shape)
        elif isinstance(sublayer, (keras.layers.Conv2D, keras.layers.SeparableConv2D)):
            input_shape = sublayer.get_build_config()["input_shape"]
            output_shape = sublayer.compute_output_shape(input_shape)
            axes = (1, 2) if sublayer.data_format == "channels_last" else (2, 3)
            positions = output_shape[axes[0]] * output_shape[axes[1]]
            if isinstance(sublayer, keras.layers.SeparableConv2D):
                kernels = math.prod(sublayer.depthwise_kernel.shape) + math.prod(sublayer.pointwise_kernel.shape)
            else:
                kernels = math.prod(sublayer.kernel.shape)
            total += positions * kernels
    return total
