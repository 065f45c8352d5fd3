"""The NASNet cell search space as data: operations, named operation sets, genotypes, sampling and mutation.

A cell starts from two states: 0, the processed cell input, and 1, the adjusted previous layer (the numbering of
`improve_nas.models.genotype` and of TF-slim's NASNet). Each of its B blocks (5 by default) reads two earlier states,
applies one operation to each, adds the two results and appends the sum as a new state. The cell output
concatenates the block states no block reads (Zoph et al. 2018: "all of the unused hidden states generated in the
convolutional cell are concatenated"), unless a published cell names its own list (`Cell.concat`). A genotype is a
normal and a reduction cell; the reduction cell applies stride 2 to the operations that read states 0 and 1 (that
is the builder's business, not this module's).

Operation sets (the names are `models.genotype`'s, which builds every one; TF-slim's spellings for NASNet-A's six):
    nasnet  the 13 of Zoph, Vasudevan, Shlens, Le, *Learning Transferable Architectures for Scalable Image
            Recognition*, CVPR 2018, §3: identity; 1x3 then 3x1 conv; 1x7 then 7x1 conv; 3x3 dilated conv;
            3x3 average pool; 3x3, 5x5, 7x7 max pool; 1x1 conv; 3x3 conv; 3x3, 5x5, 7x7 separable conv.
    amoeba  the 8 of Real, Aggarwal, Huang, Le, *Regularized Evolution for Image Classifier Architecture Search*,
            AAAI 2019, §"Search space": none (identity); 3x3, 5x5, 7x7 separable conv; 3x3 average pool; 3x3 max
            pool; 3x3 dilated separable conv; 1x7 then 7x1 conv. The paper's own section was not among the stored
            pages (they hold its abstract only); checked instead against AMOEBA_OPS in facebookresearch/unnas
            (pycls/models/nas/genotypes.py, the design spaces of Radosavovic et al. 2019) and in microsoft/nni
            (nni/nas/hub/pytorch/nasnet.py, class AmoebaNet, which follows pycls), both exactly these 8, and
            against AmoebaNet-A's cells in tensorflow/tpu (models/official/amoeba_net/model_specs.py,
            "amoeba_net_a"), which use 7 of them and nothing else.
    darts   the 7 of Liu, Simonyan, Yang, *DARTS: Differentiable Architecture Search*, ICLR 2019 (quark0/darts
            cnn/genotypes.py PRIMITIVES) without `none` (DARTS' "zero", not an identity): 3x3 and 5x5 separable
            conv, 3x3 and 5x5 dilated separable conv, 3x3 max and average pool, skip_connect (identity).
    DARTS' sep_conv_KxK is two stacked separable convolutions, TF-slim's separable_KxK_2, so the same name here.

Canonical form (what `Genotype.digest` hashes): within a block the two (operation, state) pairs are unordered, and
blocks are renumbered to the smallest encoding over every order that keeps each block after the blocks it reads
(independent blocks commute); the output list is resolved to explicit state numbers and renumbered alike. Not
canonicalised: blocks whose result is neither read nor concatenated (only possible with an explicit `concat`) stay,
two operations that compute the same function (a 1x1 conv vs. nothing alike) stay distinct, and states 0 and 1 are
never exchanged (they differ: the reduction cell strides only them, and they are different tensors).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from typing import Iterator, Sequence

import numpy as np

from improve_nas.errors import UsageError, nearest
from improve_nas.models import genotype as models_genotype

NUM_INPUT_STATES = models_genotype.NUM_INPUT_STATES  # states 0 and 1
DEFAULT_NUM_BLOCKS = 5  # B of Zoph et al. 2018

_G = models_genotype
# name -> short form of the one-line text, in the order of Zoph et al. 2018's list (then the dilated separables).
# The order is part of the canonical form (`_sort_key`), so of every digest: append, never reorder.
OPERATIONS = {
    _G.IDENTITY: "id",
    _G.CONV_1X3_3X1: "conv1x3",
    _G.CONV_1X7_7X1: "conv1x7",
    _G.DILATED_CONV_3X3: "dil3",
    _G.AVG_POOL_3X3: "avg3",
    _G.MAX_POOL_3X3: "max3",
    _G.MAX_POOL_5X5: "max5",
    _G.MAX_POOL_7X7: "max7",
    _G.CONV_1X1: "conv1",
    _G.CONV_3X3: "conv3",
    _G.SEPARABLE_3X3: "sep3",
    _G.SEPARABLE_5X5: "sep5",
    _G.SEPARABLE_7X7: "sep7",
    _G.DILATED_SEPARABLE_3X3: "dsep3",
    _G.DILATED_SEPARABLE_5X5: "dsep5",
}
_BY_SHORT = {short: name for name, short in OPERATIONS.items()}

OP_SETS: dict[str, tuple[str, ...]] = {
    "nasnet": tuple(OPERATIONS)[:13],
    "amoeba": (_G.IDENTITY, _G.SEPARABLE_3X3, _G.SEPARABLE_5X5, _G.SEPARABLE_7X7, _G.AVG_POOL_3X3, _G.MAX_POOL_3X3,
               _G.DILATED_SEPARABLE_3X3, _G.CONV_1X7_7X1),
    "darts": (_G.SEPARABLE_3X3, _G.SEPARABLE_5X5, _G.DILATED_SEPARABLE_3X3, _G.DILATED_SEPARABLE_5X5, _G.MAX_POOL_3X3,
              _G.AVG_POOL_3X3, _G.IDENTITY),
}


def op_set(name: str) -> tuple[str, ...]:
    """The operations of the named set; a one-line UsageError for an unknown name."""
    if name not in OP_SETS:
        raise UsageError(f"unknown operation set {name!r}; {nearest(str(name), OP_SETS)}valid: {', '.join(OP_SETS)}")
    return OP_SETS[name]


Pair = tuple[str, int]  # (operation, the state it reads)
Block = tuple[Pair, Pair]


@dataclasses.dataclass(frozen=True)
class Cell:
    """One cell: B blocks of two (operation, state) pairs, and which states the output concatenates.

    Attributes:
        blocks: Block i reads states < 2 + i and makes state 2 + i.
        concat: Explicit output states (a published cell's list), or None for the search space's rule: every block
            state no block reads.
    """

    blocks: tuple[Block, ...]
    concat: tuple[int, ...] | None = None

    def __post_init__(self):
        if not self.blocks:
            raise UsageError("a cell needs at least one block; got none")
        for i, block in enumerate(self.blocks):
            if len(block) != 2:
                raise UsageError(f"block {i} needs two (operation, state) pairs; got {len(block)}")
            for operation, state in block:
                if operation not in OPERATIONS:
                    raise UsageError(f"unknown operation {operation!r} in block {i}; "
                                     f"{nearest(str(operation), OPERATIONS)}valid: {', '.join(OPERATIONS)}")
                if isinstance(state, bool) or not isinstance(state, int) or not 0 <= state < NUM_INPUT_STATES + i:
                    raise UsageError(f"block {i} reads state {state!r}; valid: 0..{NUM_INPUT_STATES + i - 1} "
                                     "(the cell inputs and earlier blocks)")
        if self.concat is not None:
            num_states = NUM_INPUT_STATES + len(self.blocks)
            if not self.concat or list(self.concat) != sorted(set(self.concat)) or not all(
                    isinstance(s, int) and 0 <= s < num_states for s in self.concat):
                raise UsageError(f"concat {list(self.concat)} must be distinct increasing states in "
                                 f"0..{num_states - 1}, at least one")

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def output_states(self) -> tuple[int, ...]:
        """The states the cell output concatenates, in order."""
        if self.concat is not None:
            return self.concat
        read = {state for block in self.blocks for _, state in block}
        return tuple(s for s in range(NUM_INPUT_STATES, NUM_INPUT_STATES + self.num_blocks) if s not in read)

    @property
    def operations(self) -> tuple[str, ...]:
        return tuple(operation for block in self.blocks for operation, _ in block)

    def canonical(self) -> Cell:
        """The smallest encoding of this wiring (module docstring: what is and is not canonicalised)."""
        best = None
        for order in _topological_orders(self.blocks):
            candidate = _renumbered(self, order)
            key = _sort_key(candidate)
            if best is None or key < best[0]:
                best = (key, candidate)
        return best[1]

    def to_dict(self) -> dict:
        value = {"blocks": [[list(pair) for pair in block] for block in self.blocks]}
        if self.concat is not None:
            value["concat"] = list(self.concat)
        return value

    @classmethod
    def from_dict(cls, value, where: str = "cell") -> Cell:
        if not isinstance(value, dict) or "blocks" not in value or set(value) - {"blocks", "concat"}:
            raise UsageError(f"{where} must be an object with 'blocks' (and optionally 'concat'); got {value!r:.80}")
        blocks = value["blocks"]
        try:
            parsed = tuple(tuple((str(op), state) for op, state in block) for block in blocks)
        except (TypeError, ValueError):
            raise UsageError(f"{where} blocks must be lists of two [operation, state] pairs; got {blocks!r:.80}")
        concat = value.get("concat")
        if concat is not None and not isinstance(concat, list):
            raise UsageError(f"{where} concat must be a list of states; got {concat!r:.80}")
        return cls(parsed, None if concat is None else tuple(concat))

    def text(self) -> str:
        parts = [f"[{OPERATIONS[a]}({i})+{OPERATIONS[b]}({j})]" for (a, i), (b, j) in self.blocks]
        if self.concat is not None:
            parts.append(f"out({','.join(map(str, self.concat))})")
        return " ".join(parts)

    def to_cell_genotype(self) -> models_genotype.CellGenotype:
        """This cell as `models.genotype.CellGenotype`, what the NASNet model builds."""
        outputs = set(self.output_states)
        return models_genotype.CellGenotype(
            operations=self.operations,
            hiddenstate_indices=tuple(state for block in self.blocks for _, state in block),
            used_hiddenstates=tuple(0 if s in outputs else 1 for s in range(NUM_INPUT_STATES + self.num_blocks)))

    @classmethod
    def from_cell_genotype(cls, cell: models_genotype.CellGenotype) -> Cell:
        pairs = list(zip(cell.operations, cell.hiddenstate_indices))
        return cls(tuple((pairs[2 * i], pairs[2 * i + 1]) for i in range(cell.num_combinations)),
                   tuple(cell.output_states))


def _topological_orders(blocks: Sequence[Block]) -> Iterator[tuple[int, ...]]:
    """Every order of the blocks in which each block comes after the blocks whose states it reads."""
    needs = [{state - NUM_INPUT_STATES for _, state in block if state >= NUM_INPUT_STATES} for block in blocks]

    def extend(order: list[int], placed: set[int]):
        if len(order) == len(blocks):
            yield tuple(order)
            return
        for i in range(len(blocks)):
            if i not in placed and needs[i] <= placed:
                order.append(i)
                placed.add(i)
                yield from extend(order, placed)
                placed.discard(i)
                order.pop()

    yield from extend([], set())


def _renumbered(cell: Cell, order: tuple[int, ...]) -> Cell:
    """`cell` with its blocks in `order` (old block indices), states renumbered, pairs sorted, concat explicit."""
    new_state = {s: s for s in range(NUM_INPUT_STATES)}
    new_state.update({NUM_INPUT_STATES + old: NUM_INPUT_STATES + new for new, old in enumerate(order)})
    blocks = tuple(tuple(sorted((op, new_state[state]) for op, state in cell.blocks[old])) for old in order)
    return Cell(blocks, tuple(sorted(new_state[s] for s in cell.output_states)))


def _sort_key(cell: Cell):
    return (tuple((OPERATIONS_INDEX[a], i, OPERATIONS_INDEX[b], j) for (a, i), (b, j) in cell.blocks), cell.concat)


OPERATIONS_INDEX = {name: index for index, name in enumerate(OPERATIONS)}


@dataclasses.dataclass(frozen=True)
class Genotype:
    """A normal and a reduction cell: one architecture of the space."""

    normal: Cell
    reduce: Cell

    def __post_init__(self):
        for name in ("normal", "reduce"):
            if not isinstance(getattr(self, name), Cell):
                raise UsageError(f"genotype {name} must be a Cell; got {type(getattr(self, name)).__name__}")

    @property
    def cells(self) -> tuple[Cell, Cell]:
        return (self.normal, self.reduce)

    def check_op_set(self, name: str) -> Genotype:
        """Self, if every operation is in the named set; else a one-line UsageError."""
        allowed = op_set(name)
        for cell in self.cells:
            for operation in cell.operations:
                if operation not in allowed:
                    raise UsageError(f"operation {operation!r} is not in operation set {name!r}; "
                                     f"valid: {', '.join(allowed)}")
        return self

    def canonical(self) -> Genotype:
        return Genotype(self.normal.canonical(), self.reduce.canonical())

    def digest(self) -> str:
        """16 hex digits of the canonical form's SHA-256: equivalent wirings hash alike."""
        text = json.dumps(self.canonical().to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def to_dict(self) -> dict:
        return {"normal": self.normal.to_dict(), "reduce": self.reduce.to_dict()}

    @classmethod
    def from_dict(cls, value) -> Genotype:
        if not isinstance(value, dict) or set(value) != {"normal", "reduce"}:
            raise UsageError(f"a genotype is an object with keys 'normal' and 'reduce'; got {value!r:.80}")
        return cls(Cell.from_dict(value["normal"], "normal cell"), Cell.from_dict(value["reduce"], "reduce cell"))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str, op_set_name: str | None = None) -> Genotype:
        """Parses and validates `to_json`'s form (optionally against an operation set); one-line UsageErrors."""
        try:
            value = json.loads(text)
        except (TypeError, ValueError) as error:
            raise UsageError(f"genotype is not valid JSON ({error}); got {str(text)[:80]!r}") from None
        genotype = cls.from_dict(value)
        return genotype.check_op_set(op_set_name) if op_set_name is not None else genotype

    def text(self) -> str:
        """One line, e.g. ``normal: [sep5(0)+sep3(1)] ... | reduce: [...] ...``."""
        return f"normal: {self.normal.text()} | reduce: {self.reduce.text()}"

    @classmethod
    def from_text(cls, text: str) -> Genotype:
        """Inverse of `text`."""
        match = re.fullmatch(r"\s*normal:(.*)\|\s*reduce:(.*)", str(text))
        if not match:
            raise UsageError(f"genotype text must read 'normal: [...] ... | reduce: [...] ...'; got {text!r:.80}")
        return cls(_cell_from_text(match.group(1), "normal"), _cell_from_text(match.group(2), "reduce"))

    def to_cell_genotypes(self) -> tuple[models_genotype.CellGenotype, models_genotype.CellGenotype]:
        """(normal, reduction) as `models.genotype.CellGenotype`, which the NASNet builder takes."""
        return self.normal.to_cell_genotype(), self.reduce.to_cell_genotype()

    @classmethod
    def from_cell_genotypes(cls, normal: models_genotype.CellGenotype,
                            reduction: models_genotype.CellGenotype) -> Genotype:
        return cls(Cell.from_cell_genotype(normal), Cell.from_cell_genotype(reduction))


_BLOCK = re.compile(r"\[(\w+)\((\d+)\)\+(\w+)\((\d+)\)\]")
_OUT = re.compile(r"out\(([\d,]+)\)")


def _cell_from_text(text: str, where: str) -> Cell:
    blocks, concat = [], None
    for token in text.split():
        block, out = _BLOCK.fullmatch(token), _OUT.fullmatch(token)
        if block:
            shorts = (block.group(1), block.group(3))
            for short in shorts:
                if short not in _BY_SHORT:
                    raise UsageError(f"unknown operation {short!r} in the {where} cell; valid: {', '.join(_BY_SHORT)}")
            blocks.append(((_BY_SHORT[shorts[0]], int(block.group(2))), (_BY_SHORT[shorts[1]], int(block.group(4)))))
        elif out and concat is None:
            concat = tuple(int(s) for s in out.group(1).split(","))
        else:
            raise UsageError(f"cannot read {token!r} in the {where} cell; blocks read like [sep3(0)+id(1)], "
                             "the output list like out(2,3)")
    return Cell(tuple(blocks), concat)


# The named genotypes, in this module's numbering (state 0 = the cell input, 1 = the previous layer).
NASNET_A = Genotype.from_cell_genotypes(models_genotype.NASNET_A_NORMAL, models_genotype.NASNET_A_REDUCTION)

# AmoebaNet-A (Real et al. 2019, Figure 4), from tensorflow/tpu models/official/amoeba_net/model_specs.py
# (cell "amoeba_net_a"), which uses TF-slim's numbering and output flags, as models.genotype does.
_ID, _AVG, _MAX = _G.IDENTITY, _G.AVG_POOL_3X3, _G.MAX_POOL_3X3
_SEP3, _SEP5, _SEP7 = _G.SEPARABLE_3X3, _G.SEPARABLE_5X5, _G.SEPARABLE_7X7
AMOEBANET_A = Genotype(
    normal=Cell((((_AVG, 0), (_MAX, 0)), ((_SEP3, 1), (_ID, 1)), ((_ID, 0), (_AVG, 1)), ((_SEP3, 0), (_SEP5, 2)),
                 ((_AVG, 5), (_SEP3, 0))), concat=(1, 3, 4, 6)),
    reduce=Cell((((_SEP3, 1), (_AVG, 0)), ((_MAX, 0), (_SEP7, 2)), ((_MAX, 1), (_MAX, 0)),
                 ((_SEP3, 4), (_G.CONV_1X7_7X1, 0)), ((_AVG, 1), (_SEP7, 0))), concat=(2, 3, 4, 5, 6)),
)

# DARTS-V2 (Liu et al. 2019, second-order search; quark0/darts cnn/genotypes.py DARTS_V2). DARTS numbers the
# previous-previous cell 0 and the previous cell 1, the reverse of ours, so its states 0 and 1 are exchanged here
# (checked on that file's NASNet genotype, which becomes models.genotype's NASNET_A wiring under the exchange).
# 4 blocks; DARTS concatenates every block state.
_DSEP3 = _G.DILATED_SEPARABLE_3X3
DARTS_V2 = Genotype(
    normal=Cell((((_SEP3, 1), (_SEP3, 0)), ((_SEP3, 1), (_SEP3, 0)), ((_SEP3, 0), (_ID, 1)),
                 ((_ID, 1), (_DSEP3, 2))), concat=(2, 3, 4, 5)),
    reduce=Cell((((_MAX, 1), (_MAX, 0)), ((_ID, 2), (_MAX, 0)), ((_MAX, 1), (_ID, 2)), ((_ID, 2), (_MAX, 0))),
                concat=(2, 3, 4, 5)),
)

NAMED_GENOTYPES = {"nasnet_a": NASNET_A, "amoebanet_a": AMOEBANET_A, "darts_v2": DARTS_V2}


def named_genotype(name: str) -> Genotype:
    """A published genotype by name; a one-line UsageError for an unknown one."""
    if name not in NAMED_GENOTYPES:
        raise UsageError(f"unknown genotype {name!r}; {nearest(str(name), NAMED_GENOTYPES)}"
                         f"valid: {', '.join(NAMED_GENOTYPES)}")
    return NAMED_GENOTYPES[name]


def resolve_genotype(reference: str) -> Genotype:
    """The genotype `reference` names: one of `NAMED_GENOTYPES`, or the path of a .json file holding `to_json`'s form.

    The hparam `genotype` is such a reference. Every failure is a one-line UsageError; those of a file name its path.
    """
    reference = str(reference)
    if not reference.endswith(".json"):
        return named_genotype(reference)
    try:
        with open(reference, encoding="utf-8") as file:
            text = file.read()
    except (OSError, UnicodeDecodeError) as error:
        reason = "not UTF-8 text" if isinstance(error, UnicodeDecodeError) else error.strerror or str(error)
        raise UsageError(f"cannot read the genotype file {reference} ({reason}); give the path of a .json file "
                         f"holding one genotype, or a name: {', '.join(NAMED_GENOTYPES)}") from None
    try:
        return Genotype.from_json(text)
    except UsageError as error:
        raise UsageError(f"genotype file {reference}: {error}") from None


def _sample_cell(rng: np.random.Generator, operations: Sequence[str], num_blocks: int) -> Cell:
    blocks = []
    for i in range(num_blocks):
        blocks.append(tuple((operations[int(rng.integers(len(operations)))], int(rng.integers(NUM_INPUT_STATES + i)))
                            for _ in range(2)))
    return Cell(tuple(blocks))


def sample(rng: np.random.Generator, op_set_name: str, num_blocks: int = DEFAULT_NUM_BLOCKS) -> Genotype:
    """A genotype drawn uniformly over encodings: every operation and every earlier state equally likely.

    (Uniform over encodings, not over equivalence classes: a wiring with more equivalent encodings is likelier.)
    """
    operations = op_set(op_set_name)
    if isinstance(num_blocks, bool) or not isinstance(num_blocks, int) or num_blocks < 1:
        raise UsageError(f"num_blocks must be a positive integer; got {num_blocks!r}")
    return Genotype(_sample_cell(rng, operations, num_blocks), _sample_cell(rng, operations, num_blocks))


MUTATIONS = ("operation", "state", "identity")  # Real et al. 2019, Figure 2: op, hidden state, identity


def mutate(genotype: Genotype, rng: np.random.Generator, op_set_name: str,
           kind: str | None = None) -> Genotype:
    """One mutation of Real et al. 2019, chosen uniformly among the three unless `kind` names one.

    The mutated position is uniform: one of the two cells, one block, one of its two pairs. `operation` replaces
    its operation with a different one of the set; `state` makes it read a different earlier state (so the cell
    stays a DAG); `identity` returns the genotype unchanged, as the paper does. An explicit output list is kept;
    the default rule (unused states) follows the new wiring.
    """
    operations = op_set(op_set_name)
    if kind is None:
        kind = MUTATIONS[int(rng.integers(len(MUTATIONS)))]
    if kind not in MUTATIONS:
        raise UsageError(f"unknown mutation {kind!r}; valid: {', '.join(MUTATIONS)}")
    if kind == "identity":
        return genotype
    which = int(rng.integers(2))
    cell = genotype.cells[which]
    block_index, pair_index = int(rng.integers(cell.num_blocks)), int(rng.integers(2))
    operation, state = cell.blocks[block_index][pair_index]
    if kind == "operation":
        choices = [op for op in operations if op != operation]
        operation = choices[int(rng.integers(len(choices)))]
    else:
        choices = [s for s in range(NUM_INPUT_STATES + block_index) if s != state]
        state = choices[int(rng.integers(len(choices)))]
    block = list(cell.blocks[block_index])
    block[pair_index] = (operation, state)
    blocks = cell.blocks[:block_index] + (tuple(block),) + cell.blocks[block_index + 1:]
    new_cell = Cell(blocks, cell.concat)
    return Genotype(new_cell, genotype.reduce) if which == 0 else Genotype(genotype.normal, new_cell)


def mutate_changed(genotype: Genotype, rng: np.random.Generator, op_set_name: str, max_tries: int = 100) -> Genotype:
    """Like `mutate` without the identity: a child whose canonical hash differs from its parent's.

    An operation or state mutation always changes the encoding; the retry covers the rare child that is an
    equivalent wiring of its parent.
    """
    parent = genotype.digest()
    for _ in range(max_tries):
        child = mutate(genotype, rng, op_set_name, kind=MUTATIONS[int(rng.integers(2))])
        if child.digest() != parent:
            return child
    raise UsageError(f"no mutation of {genotype.text()} changes it in operation set {op_set_name!r}")
