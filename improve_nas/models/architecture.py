"""The NASNet CIFAR macro structure as plain data (docs/original_code.md §3.2–§3.3).

`plan_network` turns the hyperparameters into one `CellSpec` per cell, in build order,
without touching Keras. The network (`nasnet.NASNet`) and the summary
(`summary.summarize`) both read this plan.

Resolution changes are tracked structurally (a ``level`` = reductions applied so far)
instead of comparing tensor shapes as the original does. The two agree whenever every
feature map has at least 2 pixels per side before each reduction; on even tinier maps
(where a stride-2 SAME op leaves 1 pixel at 1) the original would skip a factorized
reduction that this plan still inserts.
"""

from __future__ import annotations

import dataclasses

from improve_nas.errors import UsageError
from improve_nas.models import genotype as genotype_lib

NORMAL = "normal"
REDUCTION = "reduction"


@dataclasses.dataclass(frozen=True)
class CellSpec:
    """Everything needed to build one cell and wire it.

    Attributes:
        kind: ``"normal"`` or ``"reduction"``.
        position: Index among all cells, reduction cells included (the original's ``true_cell_num``).
        filters: Cell width f.
        strides: 1 (normal) or 2 (reduction).
        net_source: Output the cell reads as ``net``: 0 is the stem, ``k + 1`` is cell ``k``.
        prev_source: Output read as ``prev``, or None where the original's is None.
        prev_mode: How the cell adjusts ``prev`` (see `cells.PREV_MODES`).
        input_channels: Width of ``net``.
        output_channels: Width of the cell output.
        level: Reductions applied up to and including this cell.
        drop_path_keep_prob: Keep probability at the end of the ramp, scaled by depth.
    """

    kind: str
    position: int
    filters: int
    strides: int
    net_source: int
    prev_source: int | None
    prev_mode: str
    input_channels: int
    output_channels: int
    level: int
    drop_path_keep_prob: float


@dataclasses.dataclass(frozen=True)
class NetworkPlan:
    """The macro structure: stem width, the cells in build order, where the aux head goes.

    Attributes:
        stem_filters: Width of the 3×3 stem convolution.
        cells: One spec per cell, reduction cells included.
        aux_head_after: Position of the cell whose output feeds the aux head (the last
            normal cell before the second reduction), or None with fewer than 2 reductions.
    """

    stem_filters: int
    cells: tuple[CellSpec, ...]
    aux_head_after: int | None

    @property
    def feature_channels(self) -> int:
        """Width of the global-pool features (24·F for NASNet-A with 2 reductions)."""
        return self.cells[-1].output_channels


def reduction_indices(num_cells: int, num_reduction_layers: int) -> list[int]:
    """Normal-cell numbers before which a reduction cell is inserted."""
    return [int(k / (num_reduction_layers + 1) * num_cells) for k in range(1, num_reduction_layers + 1)]


def plan_network(
    *,
    num_cells: int,
    num_conv_filters: int,
    stem_multiplier: float,
    filter_scaling_rate: float,
    num_reduction_layers: int,
    skip_reduction_layer_input: int,
    drop_path_keep_prob: float,
    normal_genotype: genotype_lib.CellGenotype = genotype_lib.NASNET_A_NORMAL,
    reduction_genotype: genotype_lib.CellGenotype = genotype_lib.NASNET_A_REDUCTION,
) -> NetworkPlan:
    """Lays out the stem and cells exactly as the 2019 code builds them.

    Raises:
        UsageError: if reduction cells would collide (too few cells for that many reductions).
    """
    indices = reduction_indices(num_cells, num_reduction_layers)
    if len(set(indices)) != len(indices):
        raise UsageError(
            f"num_cells={num_cells} is too few for num_reduction_layers={num_reduction_layers}: "
            f"reduction positions {indices} collide; use num_cells >= {num_reduction_layers + 1}"
        )
    stem_filters = int(num_conv_filters * stem_multiplier)
    # Widths and levels of the outputs built so far: index 0 is the stem.
    widths, levels = [stem_filters], [0]
    # The original's `cell_outputs`, as indices into the lists above; it starts [None, stem].
    sources: list[int | None] = [None, 0]
    total_cells = num_cells + num_reduction_layers  # the original's num_cells + 2 for R = 2
    cells: list[CellSpec] = []
    filter_scaling = 1.0
    aux_head_after = None

    def add_cell(kind, genotype, filters, strides, net, prev):
        if prev is None:
            prev_mode = "net"
        elif levels[prev] != levels[net]:
            if levels[net] - levels[prev] != 1:
                raise UsageError("a cell input skips more than one reduction; unsupported layout")
            prev_mode = "reduce"
        else:
            prev_mode = "project" if widths[prev] != filters else "same"
        position = len(cells)
        keep = 1.0 - (position + 1) / total_cells * (1.0 - drop_path_keep_prob)
        spec = CellSpec(
            kind=kind,
            position=position,
            filters=filters,
            strides=strides,
            net_source=net,
            prev_source=prev,
            prev_mode=prev_mode,
            input_channels=widths[net],
            output_channels=len(genotype.output_states) * filters,
            level=levels[net] + (strides > 1),
            drop_path_keep_prob=keep,
        )
        cells.append(spec)
        widths.append(spec.output_channels)
        levels.append(spec.level)
        sources.append(len(widths) - 1)

    for cell_num in range(num_cells):
        prev_before_reduction = sources[-2]
        if cell_num in indices:
            filter_scaling *= filter_scaling_rate
            filters = int(num_conv_filters * filter_scaling)
            add_cell(REDUCTION, reduction_genotype, filters, 2, net=sources[-1], prev=sources[-2])
        prev = prev_before_reduction if skip_reduction_layer_input else sources[-2]
        filters = int(num_conv_filters * filter_scaling)
        add_cell(NORMAL, normal_genotype, filters, 1, net=sources[-1], prev=prev)
        if len(indices) >= 2 and cell_num == indices[1] - 1:
            aux_head_after = len(cells) - 1
    return NetworkPlan(stem_filters=stem_filters, cells=tuple(cells), aux_head_after=aux_head_after)
