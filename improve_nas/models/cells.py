"""One NASNet cell, generic over its genotype (docs/original_code.md §3.4): any operations, blocks and output list.

The cell is built from a static description of its inputs (computed by
`architecture.plan_network`), so every sublayer exists after ``__init__`` and the
wiring does not depend on runtime shapes.
"""

from __future__ import annotations

import keras
from keras import ops

from improve_nas.errors import UsageError
from improve_nas.models import genotype as genotype_lib
from improve_nas.models.drop_path import DropPath
from improve_nas.models.layers import FactorizedReduction, ReluConvBN, SettingsLayer, activation
from improve_nas.models.ops import make_operation

# How the cell turns `prev` into its second state h1:
#   "net":     there is no previous layer; h1 is the raw cell input, unchanged (cell 0 gets the stem).
#   "same":    prev already has the cell's resolution and width; used as is.
#   "project": same resolution, other width: activation → conv 1×1 → BN.
#   "reduce":  prev has twice the resolution: activation → factorized reduction.
PREV_MODES = ("net", "same", "project", "reduce")


@keras.saving.register_keras_serializable(package="improve_nas")
class Cell(SettingsLayer):
    """A NASNet normal or reduction cell of any `genotype.CellGenotype` (NASNet-A's, AmoebaNet-A's, a searched one).

    ``h0 = BN(conv1×1(act(net)))``; ``h1`` = the previous layer adjusted per
    ``prev_mode``. Each combination applies one op to each of two states and adds them;
    ops reading ``h0``/``h1`` use ``strides``, later ones stride 1. Drop path applies
    to every op output except ``none``. The output concatenates the unused states,
    mapping any whose width or resolution differs from the last state's to ``filters``
    channels with a factorized reduction first (in NASNet-A only the raw stem state of
    cell 0; in a reduction cell that outputs h0 or h1, those too).

    Drop path (training only, and only when ``drop_path_keep_prob < 1``): the keep
    probability is ``1 - progress * (1 - drop_path_keep_prob)``, where ``progress`` in
    [0, 1] is passed per call, so it ramps from 1 to ``drop_path_keep_prob``.

    Args:
        genotype: The cell's `genotype.CellGenotype` (or its `to_config` dict).
        filters: Width f of every state.
        strides: 1 for a normal cell, 2 for a reduction cell.
        prev_mode: One of `PREV_MODES`.
        input_channels: Channels of ``net`` (the width of h1 when ``prev_mode="net"``).
        drop_path_keep_prob: This cell's keep probability at the end of the ramp,
            already scaled by the cell's depth.
        settings: Shared block settings.
    """

    def __init__(
        self,
        *,
        genotype: genotype_lib.CellGenotype | dict,
        filters: int,
        strides: int,
        prev_mode: str,
        input_channels: int,
        drop_path_keep_prob: float = 1.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if isinstance(genotype, dict):
            genotype = genotype_lib.CellGenotype.from_config(genotype)
        if prev_mode not in PREV_MODES:
            raise UsageError(f"prev_mode={prev_mode!r} is invalid; valid: {', '.join(PREV_MODES)}")
        self.genotype = genotype
        self.filters = filters
        self.strides = strides
        self.prev_mode = prev_mode
        self.input_channels = input_channels
        self.drop_path_keep_prob = drop_path_keep_prob

        self.base = ReluConvBN(filters=filters, settings=self.settings, name="base", dtype=self.dtype_policy)
        if prev_mode == "project":
            self.prev_adjustment = ReluConvBN(
                filters=filters, settings=self.settings, name="prev_projection", dtype=self.dtype_policy
            )
        elif prev_mode == "reduce":
            self.prev_adjustment = FactorizedReduction(
                filters=filters, strides=2, settings=self.settings, name="prev_reduction", dtype=self.dtype_policy
            )

        # Static bookkeeping per state: width, and whether it is at the reduced resolution.
        widths = [filters, input_channels if prev_mode == "net" else filters]
        reduced = [False, False]
        self.operations = []
        for i in range(genotype.num_combinations):
            results = []
            for j in (2 * i, 2 * i + 1):
                state = genotype.hiddenstate_indices[j]
                from_input = state < genotype_lib.NUM_INPUT_STATES
                op_strides = strides if from_input else 1
                self.operations.append(
                    make_operation(
                        genotype.operations[j],
                        filters=filters,
                        input_channels=widths[state],
                        strides=op_strides,
                        settings=self.settings,
                        name=f"comb_{i}_{'left' if j % 2 == 0 else 'right'}_{genotype.operations[j]}",
                        dtype=self.dtype_policy,
                    )
                )
                results.append(reduced[state] or op_strides > 1)
            if results[0] != results[1]:
                raise UsageError(f"combination {i} adds states of different resolutions; check the genotype")
            widths.append(filters)
            reduced.append(results[0])

        # Map concatenated states to the last state's width and resolution.
        self.output_projections = {}
        for state in genotype.output_states:
            if widths[state] != filters or reduced[state] != reduced[-1]:
                self.output_projections[str(state)] = FactorizedReduction(
                    filters=filters,
                    strides=2 if reduced[state] != reduced[-1] else 1,
                    settings=self.settings,
                    name=f"output_projection_{state}",
                    dtype=self.dtype_policy,
                )

        if drop_path_keep_prob < 1.0:
            self.drop_path = DropPath(name="drop_path", dtype=self.dtype_policy)

    @property
    def output_channels(self) -> int:
        return len(self.genotype.output_states) * self.filters

    def build(self, net_shape, prev_shape):
        genotype = self.genotype
        self.base.build(net_shape)
        if self.prev_mode in ("project", "reduce"):
            self.prev_adjustment.build(prev_shape)
        h1_channels = self.input_channels if self.prev_mode == "net" else self.filters
        shapes = [self.output_shape_for(net_shape, channels=self.filters)]
        shapes.append(self.output_shape_for(net_shape, channels=h1_channels))
        for i in range(genotype.num_combinations):
            for j in (2 * i, 2 * i + 1):
                self.operations[j].build(shapes[genotype.hiddenstate_indices[j]])
            shapes.append(self.operations[2 * i].compute_output_shape(shapes[genotype.hiddenstate_indices[2 * i]]))
        for state, projection in self.output_projections.items():
            projection.build(shapes[int(state)])

    def compute_output_shape(self, net_shape, prev_shape=None):
        return self.output_shape_for(net_shape, channels=self.output_channels, strides=self.strides)

    def call(self, net, prev, training=False, drop_path_progress=0.0):
        h0 = self.base(net, training=training)
        if self.prev_mode == "net":
            h1 = net
        elif self.prev_mode == "same":
            h1 = prev
        elif self.prev_mode == "project":
            h1 = self.prev_adjustment(prev, training=training)
        else:
            h1 = self.prev_adjustment(activation(prev, self.settings), training=training)
        states = [h0, h1]

        genotype = self.genotype
        dropped = [j for j, name in enumerate(genotype.operations) if name != genotype_lib.IDENTITY]
        scales = None
        if training and self.drop_path_keep_prob < 1.0:
            keep_prob = 1.0 - drop_path_progress * (1.0 - self.drop_path_keep_prob)
            scales = self.drop_path.scales(ops.shape(net)[0], len(dropped), keep_prob)

        for i in range(genotype.num_combinations):
            combined = None
            for j in (2 * i, 2 * i + 1):
                y = self.operations[j](states[genotype.hiddenstate_indices[j]], training=training)
                if scales is not None and j in dropped:
                    y = self.drop_path.apply(y, scales[dropped.index(j)])
                combined = y if combined is None else combined + y
            if self.settings.bounded_activation:
                combined = ops.relu6(combined)
            states.append(combined)

        outputs = []
        for state in genotype.output_states:
            projection = self.output_projections.get(str(state))
            outputs.append(states[state] if projection is None else projection(states[state], training=training))
        return ops.concatenate(outputs, axis=self.settings.channel_axis)

    def get_config(self):
        return {
            **super().get_config(),
            "genotype": self.genotype.to_config(),
            "filters": self.filters,
            "strides": self.strides,
            "prev_mode": self.prev_mode,
            "input_channels": self.input_channels,
            "drop_path_keep_prob": self.drop_path_keep_prob,
        }
