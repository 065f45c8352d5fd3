"""NASNet cells as data: which operation runs on which hidden state.

A cell starts with two hidden states, ``h0`` (the processed cell input) and ``h1``
(the adjusted previous layer). Each of its combinations picks two existing states by
index, applies one operation to each and appends the sum as a new state. The cell
output concatenates every state whose ``used_hiddenstates`` flag is 0. Any number of
combinations and any operation of `KNOWN_OPERATIONS` (the NASNet search space's 13 and
DARTS' dilated separable convolutions) build; NASNet-A is the default cell pair.

Reference: Zoph, Vasudevan, Shlens, Le, *Learning Transferable Architectures for
Scalable Image Recognition*, CVPR 2018 (NASNet-A, Figure 4 / Appendix; the operations, §3).
"""

from __future__ import annotations

import dataclasses

from improve_nas.errors import UsageError

# Operation names: the TF-slim NASNet spellings for NASNet-A's six, ours for the rest (`ops.make_operation` maps
# every one to a layer; `improve_nas.search.space` takes its names from here).
IDENTITY = "none"
CONV_1X3_3X1 = "conv_1x3_3x1"
CONV_1X7_7X1 = "conv_1x7_7x1"
DILATED_CONV_3X3 = "dil_conv_3x3"
AVG_POOL_3X3 = "avg_pool_3x3"
MAX_POOL_3X3 = "max_pool_3x3"
MAX_POOL_5X5 = "max_pool_5x5"
MAX_POOL_7X7 = "max_pool_7x7"
CONV_1X1 = "conv_1x1"
CONV_3X3 = "conv_3x3"
SEPARABLE_3X3 = "separable_3x3_2"
SEPARABLE_5X5 = "separable_5x5_2"
SEPARABLE_7X7 = "separable_7x7_2"
DILATED_SEPARABLE_3X3 = "dil_separable_3x3"
DILATED_SEPARABLE_5X5 = "dil_separable_5x5"

# In the order of Zoph et al. 2018's list, then the dilated separables (the order `search.space` hashes by).
KNOWN_OPERATIONS = (IDENTITY, CONV_1X3_3X1, CONV_1X7_7X1, DILATED_CONV_3X3, AVG_POOL_3X3, MAX_POOL_3X3, MAX_POOL_5X5,
                    MAX_POOL_7X7, CONV_1X1, CONV_3X3, SEPARABLE_3X3, SEPARABLE_5X5, SEPARABLE_7X7,
                    DILATED_SEPARABLE_3X3, DILATED_SEPARABLE_5X5)
NUM_INPUT_STATES = 2  # h0 and h1


@dataclasses.dataclass(frozen=True)
class CellGenotype:
    """One cell type: operations and wiring, two entries per combination.

    Attributes:
        operations: Operation names; entries ``2i`` and ``2i+1`` form combination ``i``.
        hiddenstate_indices: The state each operation reads, same layout as ``operations``.
        used_hiddenstates: One flag per state (2 inputs + one per combination); states
            flagged 0 are concatenated into the cell output.
    """

    operations: tuple[str, ...]
    hiddenstate_indices: tuple[int, ...]
    used_hiddenstates: tuple[int, ...]

    def __post_init__(self):
        if not self.operations or len(self.operations) % 2 or len(self.operations) != len(self.hiddenstate_indices):
            raise UsageError(
                f"genotype needs a positive even number of operations with one state index each; got "
                f"{len(self.operations)} operations and {len(self.hiddenstate_indices)} indices"
            )
        for name in self.operations:
            if name not in KNOWN_OPERATIONS:
                raise UsageError(f"unknown cell operation {name!r}; valid: {', '.join(KNOWN_OPERATIONS)}")
        if len(self.used_hiddenstates) != NUM_INPUT_STATES + self.num_combinations:
            raise UsageError(
                f"used_hiddenstates needs {NUM_INPUT_STATES + self.num_combinations} flags, "
                f"got {len(self.used_hiddenstates)}"
            )
        for position, index in enumerate(self.hiddenstate_indices):
            # A combination may only read states that exist before it.
            if not 0 <= index < NUM_INPUT_STATES + position // 2:
                raise UsageError(f"hidden state index {index} at position {position} reads a state not built yet")
        if not self.output_states:
            raise UsageError("used_hiddenstates marks every state as used; the cell would output nothing")

    @property
    def num_combinations(self) -> int:
        """Number of combinations, i.e. states the cell adds."""
        return len(self.operations) // 2

    @property
    def output_states(self) -> tuple[int, ...]:
        """Indices of the states concatenated into the cell output, in order."""
        return tuple(i for i, used in enumerate(self.used_hiddenstates) if not used)

    def to_config(self) -> dict:
        """Plain lists, for layer configs and JSON."""
        return {key: list(value) for key, value in dataclasses.asdict(self).items()}

    @classmethod
    def from_config(cls, config: dict) -> CellGenotype:
        """Inverse of `to_config`."""
        fields = [field.name for field in dataclasses.fields(cls)]
        if not isinstance(config, dict) or set(config) != set(fields):
            raise UsageError(f"a cell genotype config has the keys {', '.join(fields)}; got {config!r:.80}")
        return cls(**{key: tuple(value) for key, value in config.items()})


# Normal cell: output = states 1..6, so 6·f channels.
NASNET_A_NORMAL = CellGenotype(
    operations=(
        SEPARABLE_5X5, SEPARABLE_3X3,
        SEPARABLE_5X5, SEPARABLE_3X3,
        AVG_POOL_3X3, IDENTITY,
        AVG_POOL_3X3, AVG_POOL_3X3,
        SEPARABLE_3X3, IDENTITY,
    ),
    hiddenstate_indices=(0, 1, 1, 1, 0, 1, 1, 1, 0, 0),
    used_hiddenstates=(1, 0, 0, 0, 0, 0, 0),
)

# Reduction cell (stride 2 on ops that read h0/h1): output = states 3..6, so 4·f channels.
NASNET_A_REDUCTION = CellGenotype(
    operations=(
        SEPARABLE_5X5, SEPARABLE_7X7,
        MAX_POOL_3X3, SEPARABLE_7X7,
        AVG_POOL_3X3, SEPARABLE_5X5,
        IDENTITY, AVG_POOL_3X3,
        SEPARABLE_3X3, MAX_POOL_3X3,
    ),
    hiddenstate_indices=(0, 1, 0, 1, 0, 1, 3, 2, 2, 0),
    used_hiddenstates=(1, 1, 1, 0, 0, 0, 0),
)
