"""NASNet for CIFAR-sized images as one backend-agnostic Keras 3 model, with NASNet-A's cells or any others.

Reference: Zoph et al., *Learning Transferable Architectures for Scalable Image
Recognition*, CVPR 2018; as used by Macko et al., *Improving Neural Architecture Search
Image Classifiers via Ensemble Learning*, 2019 (docs/original_code.md §3).
"""

from __future__ import annotations

import keras
from keras import ops

from improve_nas.errors import UsageError
from improve_nas.models import genotype as genotype_lib
from improve_nas.models.architecture import NORMAL, REDUCTION, plan_network
from improve_nas.models.aux_head import AuxHead
from improve_nas.models.cells import Cell
from improve_nas.models.layers import BlockSettings, activation, batch_norm, conv2d, dense

DATA_FORMATS = {"NHWC": "channels_last", "NCHW": "channels_first"}


@keras.saving.register_keras_serializable(package="improve_nas")
class NASNet(keras.Model):
    """NASNet CIFAR classifier: 3×3 stem, normal cells with reduction cells between, head.

    The cells are NASNet-A's unless ``normal_genotype`` / ``reduction_genotype`` name others
    (any `genotype.CellGenotype`: AmoebaNet-A's, DARTS-V2's, a searched one); they are part of
    the config, so a saved ``.keras`` model reloads with its own cells.

    ``num_cells`` normal cells (a multiple of 3 in practice: N@F means ``num_cells=3N``)
    with ``num_reduction_layers`` reduction cells inserted before normal cells
    ``int(k / (R + 1) * num_cells)``; widths F, then ×``filter_scaling_rate`` at each
    reduction. Head: activation, global average pool (``features``), dropout, dense. A cell's
    width is its filters times the number of states it concatenates (6 and 4 in NASNet-A).

    Call with float images ``[B, H, W, C]`` in [-1, 1] of any size (always channels-last;
    with ``data_format="NCHW"`` the model transposes once and runs channels-first inside;
    on TensorFlow without a GPU, which has no channels-first Conv2D kernel, plain
    convolutions then run through a transpose, see `layers.Conv2D`). Returns
    ``{"logits": [B, K], "features": [B, C]}`` (C = 24F for NASNet-A) plus ``"aux_logits": [B, K]`` when
    ``training`` and the aux head is enabled. Outputs are float32, also under a mixed
    precision policy.

    Mixed precision: pass ``dtype="mixed_bfloat16"`` (or ``"mixed_float16"``, or a
    `keras.DTypePolicy`); every sublayer gets the model's policy, so convolutions run in
    the low-precision dtype while variables (and batch-norm statistics) stay float32.
    The policy is part of the config: a saved ``.keras`` model reloads with it. Without
    ``dtype`` the global policy (`keras.config.dtype_policy()`) applies, as for any layer.

    Drop path (the original's intended schedule, docs/original_code.md §3.7): cell ``c`` (counting
    reduction cells) keeps each op output with probability
    ``1 - min(1, step / total_training_steps) * (1 - keep_c)``, where
    ``keep_c = 1 - (c + 1) / (num_cells + num_reduction_layers) * (1 - drop_path_keep_prob)``
    (the original's ``num_cells + 2``, which assumed 2 reductions). ``step`` is
    ``training_step``, a non-trainable int counter of earlier ``call(training=True)``s,
    incremented by each one: a fresh model starts at 0 and the counter is saved with the
    weights.

    The aux head exists only with ``use_aux_head`` and at least 2 reduction cells (it sits
    after the last normal cell before the second one); with fewer, ``use_aux_head=True``
    builds nothing, as in the original (see ``has_aux_head``). When it exists its weights
    are built with the model, whatever the first call's mode, and its kernels are in
    ``model.losses`` (the original's L2 included them too); it never runs at inference.
    On maps under 5 pixels its pool window shrinks to the map (see `aux_head.AuxHead`).

    Args:
        num_classes: Number of logits K.
        num_cells: Total number of normal cells; at least ``num_reduction_layers + 1``.
        num_conv_filters: Base width F.
        stem_multiplier: The stem has ``int(F * stem_multiplier)`` filters.
        filter_scaling_rate: Width multiplier at each reduction cell.
        num_reduction_layers: Number of reduction cells R.
        skip_reduction_layer_input: 1 feeds the normal cell after a reduction the output
            from before the reduction's input (docs/original_code.md §3.3).
        use_aux_head: Return ``aux_logits`` in training.
        dense_dropout_keep_prob: Keep probability of the dropout before the logits.
        drop_path_keep_prob: Keep probability of the deepest cell at the end of the ramp;
            1.0 disables drop path (no random draws).
        total_training_steps: Length of the drop-path ramp in training calls.
        use_bounded_activation: ReLU6 and ±6 clipping (docs/original_code.md §3.9).
        data_format: ``"NHWC"`` or ``"NCHW"`` (internal layout).
        weight_decay: L2 scale; ``model.losses`` sums ``weight_decay * sum(w**2) / 2`` over kernels.
        normal_genotype: The normal cell (a `genotype.CellGenotype` or its ``to_config`` dict);
            None is NASNet-A's.
        reduction_genotype: The reduction cell, likewise.
        **kwargs: Passed to `keras.Model` (``name``, ``dtype``, ...).

    Example:
        >>> model = NASNet(num_classes=10, num_cells=3, num_conv_filters=4)
        >>> model(np.zeros((2, 32, 32, 3), "float32"))["logits"].shape
        (2, 10)
    """

    def __init__(
        self,
        *,
        num_classes: int,
        num_cells: int = 3,
        num_conv_filters: int = 10,
        stem_multiplier: float = 3.0,
        filter_scaling_rate: float = 2.0,
        num_reduction_layers: int = 2,
        skip_reduction_layer_input: int = 0,
        use_aux_head: bool = True,
        dense_dropout_keep_prob: float = 1.0,
        drop_path_keep_prob: float = 0.6,
        total_training_steps: int = 1,
        use_bounded_activation: bool = False,
        data_format: str = "NHWC",
        weight_decay: float = 5e-4,
        normal_genotype: genotype_lib.CellGenotype | dict | None = None,
        reduction_genotype: genotype_lib.CellGenotype | dict | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        _validate(locals())
        self.normal_genotype = _cell_genotype(normal_genotype, genotype_lib.NASNET_A_NORMAL)
        self.reduction_genotype = _cell_genotype(reduction_genotype, genotype_lib.NASNET_A_REDUCTION)
        self.num_classes = num_classes
        self.num_cells = num_cells
        self.num_conv_filters = num_conv_filters
        self.stem_multiplier = stem_multiplier
        self.filter_scaling_rate = filter_scaling_rate
        self.num_reduction_layers = num_reduction_layers
        self.skip_reduction_layer_input = skip_reduction_layer_input
        self.use_aux_head = use_aux_head
        self.dense_dropout_keep_prob = dense_dropout_keep_prob
        self.drop_path_keep_prob = drop_path_keep_prob
        self.total_training_steps = total_training_steps
        self.use_bounded_activation = use_bounded_activation
        self.data_format = data_format
        self.weight_decay = weight_decay

        settings = BlockSettings(
            data_format=DATA_FORMATS[data_format],
            weight_decay=weight_decay,
            bounded_activation=use_bounded_activation,
        )
        self.settings = settings
        self.plan = plan_network(
            num_cells=num_cells,
            num_conv_filters=num_conv_filters,
            stem_multiplier=stem_multiplier,
            filter_scaling_rate=filter_scaling_rate,
            num_reduction_layers=num_reduction_layers,
            skip_reduction_layer_input=skip_reduction_layer_input,
            drop_path_keep_prob=drop_path_keep_prob,
            normal_genotype=self.normal_genotype,
            reduction_genotype=self.reduction_genotype,
        )
        self.stem_conv = conv2d(self.plan.stem_filters, 3, settings, name="stem_conv", dtype=self.dtype_policy)
        self.stem_bn = batch_norm(settings, name="stem_bn", dtype=self.dtype_policy)
        genotypes = {REDUCTION: self.reduction_genotype, NORMAL: self.normal_genotype}
        self.cells = []
        counts = {}
        for spec in self.plan.cells:
            counts[spec.kind] = counts.get(spec.kind, -1) + 1
            self.cells.append(
                Cell(
                    genotype=genotypes[spec.kind],
                    filters=spec.filters,
                    strides=spec.strides,
                    prev_mode=spec.prev_mode,
                    input_channels=spec.input_channels,
                    drop_path_keep_prob=spec.drop_path_keep_prob,
                    settings=settings,
                    name=f"{spec.kind}_cell_{counts[spec.kind]}",
                    dtype=self.dtype_policy,
                )
            )
        if self.has_aux_head:
            self.aux_head = AuxHead(
                num_classes=num_classes, settings=settings, name="aux_head", dtype=self.dtype_policy
            )
        self.dropout = keras.layers.Dropout(1.0 - dense_dropout_keep_prob, name="dropout", dtype=self.dtype_policy)
        self.classifier = dense(num_classes, settings, name="logits", dtype=self.dtype_policy)
        # Counts training-mode calls: the drop-path ramp's step, restarting with every new model.
        self.training_step = self.add_weight(
            name="training_step",
            shape=(),
            dtype="int32",
            initializer="zeros",
            trainable=False,
            aggregation="only_first_replica",
        )

    @property
    def has_aux_head(self) -> bool:
        """Whether training calls return ``aux_logits``."""
        return self.use_aux_head and self.plan.aux_head_after is not None

    def build(self, input_shape):
        # Builds every layer from shapes, the aux head included, so all weights exist
        # whatever the first call's mode (and `.keras` files load through `build_from_config`).
        if len(input_shape) != 4:
            raise UsageError(f"NASNet expects images [batch, height, width, channels]; got {tuple(input_shape)}")
        batch, height, width, channels = input_shape
        shape = (batch, height, width, channels) if self.data_format == "NHWC" else (batch, channels, height, width)
        self.stem_conv.build(shape)
        shapes = [self.stem_conv.compute_output_shape(shape)]  # index 0: stem; index k + 1: cell k
        self.stem_bn.build(shapes[0])
        for spec, cell in zip(self.plan.cells, self.cells):
            net = shapes[spec.net_source]
            prev = net if spec.prev_source is None else shapes[spec.prev_source]
            cell.build(net, prev)
            shapes.append(cell.compute_output_shape(net, prev))
            if self.has_aux_head and spec.position == self.plan.aux_head_after:
                self.aux_head.build(shapes[-1])
        self.dropout.build((batch, self.plan.feature_channels))
        self.classifier.build((batch, self.plan.feature_channels))

    def call(self, images, training=False):
        training = bool(training)
        progress = 0.0  # of the drop-path ramp; only read in training
        if training:
            step = ops.cast(self.training_step.value, "float32")  # calls before this one
            progress = ops.minimum(1.0, step / float(self.total_training_steps))
            self.training_step.assign_add(1)
        x = images
        if self.data_format == "NCHW":
            x = ops.transpose(x, (0, 3, 1, 2))
        outputs = [self.stem_bn(self.stem_conv(x), training=training)]  # index 0: stem; index k + 1: cell k
        result = {}
        for spec, cell in zip(self.plan.cells, self.cells):
            net = outputs[spec.net_source]
            prev = net if spec.prev_source is None else outputs[spec.prev_source]
            outputs.append(cell(net, prev, training=training, drop_path_progress=progress))
            if training and self.has_aux_head and spec.position == self.plan.aux_head_after:
                result["aux_logits"] = ops.cast(self.aux_head(outputs[-1], training=training), "float32")
        features = ops.mean(activation(outputs[-1], self.settings), axis=self.settings.spatial_axes)
        logits = self.classifier(self.dropout(features, training=training))
        result["logits"] = ops.cast(logits, "float32")
        result["features"] = ops.cast(features, "float32")
        return result

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "num_cells": self.num_cells,
            "num_conv_filters": self.num_conv_filters,
            "stem_multiplier": self.stem_multiplier,
            "filter_scaling_rate": self.filter_scaling_rate,
            "num_reduction_layers": self.num_reduction_layers,
            "skip_reduction_layer_input": self.skip_reduction_layer_input,
            "use_aux_head": self.use_aux_head,
            "dense_dropout_keep_prob": self.dense_dropout_keep_prob,
            "drop_path_keep_prob": self.drop_path_keep_prob,
            "total_training_steps": self.total_training_steps,
            "use_bounded_activation": self.use_bounded_activation,
            "data_format": self.data_format,
            "weight_decay": self.weight_decay,
            "normal_genotype": self.normal_genotype.to_config(),
            "reduction_genotype": self.reduction_genotype.to_config(),
        }


def _cell_genotype(value, default: genotype_lib.CellGenotype) -> genotype_lib.CellGenotype:
    """A `CellGenotype` from itself, its config dict (a saved model's config) or None (the default)."""
    if value is None:
        return default
    if isinstance(value, dict):
        return genotype_lib.CellGenotype.from_config(value)
    if not isinstance(value, genotype_lib.CellGenotype):
        raise UsageError(f"a cell genotype must be a CellGenotype or its config dict; got {type(value).__name__}")
    return value


def _validate(args: dict) -> None:
    """Raises `UsageError` naming the first bad constructor argument."""
    positive_ints = ("num_classes", "num_cells", "num_conv_filters", "total_training_steps")
    for key in positive_ints:
        if isinstance(args[key], bool) or not isinstance(args[key], int) or args[key] < 1:
            raise UsageError(f"{key}={args[key]!r} is invalid; it must be an integer >= 1")
    reductions = args["num_reduction_layers"]
    if isinstance(reductions, bool) or not isinstance(reductions, int) or reductions < 0:
        raise UsageError(f"num_reduction_layers={reductions!r} is invalid; it must be an integer >= 0")
    for key in ("stem_multiplier", "filter_scaling_rate"):
        if not args[key] > 0:
            raise UsageError(f"{key}={args[key]!r} is invalid; it must be > 0")
    if int(args["num_conv_filters"] * args["stem_multiplier"]) < 1:
        raise UsageError(f"stem_multiplier={args['stem_multiplier']!r} leaves the stem with no filters")
    if args["skip_reduction_layer_input"] not in (0, 1):
        raise UsageError(f"skip_reduction_layer_input={args['skip_reduction_layer_input']!r} is invalid; valid: 0, 1")
    for key in ("dense_dropout_keep_prob", "drop_path_keep_prob"):
        if not 0.0 < args[key] <= 1.0:
            raise UsageError(f"{key}={args[key]!r} is invalid; it must be in (0, 1]")
    if args["data_format"] not in DATA_FORMATS:
        raise UsageError(f"data_format={args['data_format']!r} is invalid; valid: {', '.join(DATA_FORMATS)}")
    if not args["weight_decay"] >= 0:
        raise UsageError(f"weight_decay={args['weight_decay']!r} is invalid; it must be >= 0")
