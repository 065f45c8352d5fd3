"""The improve_nas subnetwork: a NASNet builder for the AdaNet engine (NASNet-A's cells or any genotype of the
search space), its name, and its description.

This is where the two halves meet: `improve_nas.models` knows NASNet and nothing of AdaNet, `improve_nas.adanet`
knows AdaNet and nothing of NASNet; this module maps hyperparameters onto a NASNet and presents it as an AdaNet
`Builder`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from improve_nas.adanet.subnetwork import Builder
from improve_nas.config import HParams
from improve_nas.search import space

# The published genotypes' name prefixes; any other genotype is `Arch_` and the first 8 digits of its digest.
_PREFIXES = {space.NASNET_A.digest(): "NasNet_A", space.AMOEBANET_A.digest(): "AmoebaNet_A",
             space.DARTS_V2.digest(): "DARTS_V2"}


def genotype_prefix(genotype: space.Genotype) -> str:
    """`NasNet_A`, `AmoebaNet_A`, `DARTS_V2` for the published genotypes (any equivalent wiring), else `Arch_<hash>`."""
    digest = genotype.digest()
    return _PREFIXES.get(digest, f"Arch_{digest[:8]}")


def subnetwork_name(hparams: HParams, genotype: space.Genotype = space.NASNET_A) -> str:
    """The original builder name (docs/original_code.md §2.4), e.g. `NasNet_A_6.0_768_cifar`, with `genotype`'s prefix.

    `num_cells / 3` is printed with true division (`2.0`), as the original did, so names match its directories; the
    size part (`num_conv_filters * 24`, NASNet-A's feature width) is the same for every genotype, so names of one
    size line up.
    """
    name = f"{genotype_prefix(genotype)}_{hparams.num_cells / 3}_{hparams.num_conv_filters * 24}"
    if hparams.knowledge_distillation != "none":
        name += f"_{hparams.knowledge_distillation}"
    return f"{name}_{hparams.model_version}"


def nasnet_kwargs(hparams: HParams, *, total_training_steps: int = 1) -> dict[str, Any]:
    """The `NASNet` constructor arguments an `HParams` describes (drop path ramps over `total_training_steps`)."""
    return dict(
        num_cells=hparams.num_cells, num_conv_filters=hparams.num_conv_filters,
        stem_multiplier=hparams.stem_multiplier, filter_scaling_rate=hparams.filter_scaling_rate,
        num_reduction_layers=hparams.num_reduction_layers,
        skip_reduction_layer_input=hparams.skip_reduction_layer_input, use_aux_head=hparams.use_aux_head,
        dense_dropout_keep_prob=hparams.dense_dropout_keep_prob, drop_path_keep_prob=hparams.drop_path_keep_prob,
        total_training_steps=max(1, total_training_steps), use_bounded_activation=hparams.use_bounded_activation,
        data_format=hparams.data_format, weight_decay=hparams.weight_decay)


class NASNetBuilder(Builder):
    """One NASNet candidate with `genotype`'s cells (NASNet-A by default).

    `shared()` persists what a generator reads back from the member next iteration: `num_cells`, `num_conv_filters`,
    `genotype` (`space.Genotype.to_dict`'s form) and `genotype_hash` (its digest). A member recorded without
    `genotype` was NASNet-A (`genotype_of`). `dtype` is the Keras dtype policy of the NASNet (e.g.
    `mixed_bfloat16`: computes in bfloat16, float32 variables, float32 outputs); None takes the global policy.
    """

    def __init__(self, hparams: HParams, *, total_training_steps: int, dtype: str | None = None,
                 genotype: space.Genotype = space.NASNET_A):
        if not isinstance(genotype, space.Genotype):
            raise TypeError(f"genotype must be a space.Genotype; got {type(genotype).__name__}")
        self._hparams = hparams
        self._total_training_steps = total_training_steps
        self._dtype = dtype
        self._genotype = genotype

    @classmethod
    def from_hparams(cls, hparams: HParams, *, total_training_steps: int, dtype: str | None = None) -> NASNetBuilder:
        """The builder of `hparams.genotype` (a name or a .json file, read now: a one-line UsageError if bad)."""
        return cls(hparams, total_training_steps=total_training_steps, dtype=dtype,
                   genotype=space.resolve_genotype(hparams.genotype))

    @staticmethod
    def genotype_of(shared: dict[str, Any]) -> space.Genotype:
        """The genotype of a member from its recorded `shared()` values; NASNet-A for one recorded without it."""
        return space.Genotype.from_dict(shared["genotype"]) if "genotype" in shared else space.NASNET_A

    @property
    def hparams(self) -> HParams:
        return self._hparams

    @property
    def genotype(self) -> space.Genotype:
        return self._genotype

    @property
    def name(self) -> str:
        return subnetwork_name(self._hparams, self._genotype)

    def shared(self) -> dict[str, Any]:
        return {"num_cells": self._hparams.num_cells, "num_conv_filters": self._hparams.num_conv_filters,
                **genotype_fields(self._genotype)}

    def build_subnetwork(self, *, num_classes: int, input_shape: tuple[int, ...]):
        from improve_nas.models.nasnet import NASNet

        model = NASNet(num_classes=num_classes, name=self.name, dtype=self._dtype,
                       **nasnet_kwargs(self._hparams, total_training_steps=self._total_training_steps),
                       **cell_kwargs(self._genotype))
        model.build((None, *input_shape))
        return model

    def with_architecture(self, *, num_cells: int, num_conv_filters: int) -> NASNetBuilder:
        """This builder at another size, same genotype and hyperparameters otherwise."""
        hparams = dataclasses.replace(self._hparams, num_cells=num_cells, num_conv_filters=num_conv_filters)
        return NASNetBuilder(hparams, total_training_steps=self._total_training_steps, dtype=self._dtype,
                             genotype=self._genotype)

    def with_genotype(self, genotype: space.Genotype) -> NASNetBuilder:
        """This builder with other cells, same size and hyperparameters."""
        return NASNetBuilder(self._hparams, total_training_steps=self._total_training_steps, dtype=self._dtype,
                             genotype=genotype)


def genotype_fields(genotype: space.Genotype) -> dict[str, Any]:
    """How a genotype is recorded (a member's `shared`, `improve-nas summary`): JSON form, one-line text, digest."""
    return {"genotype": genotype.to_dict(), "genotype_text": genotype.text(), "genotype_hash": genotype.digest()}


def cell_kwargs(genotype: space.Genotype) -> dict[str, Any]:
    """The `NASNet` (and `summarize`) arguments that give it `genotype`'s cells."""
    normal, reduction = genotype.to_cell_genotypes()
    return {"normal_genotype": normal, "reduction_genotype": reduction}


def describe(hparams: HParams, *, num_classes: int = 10, image_shape: tuple[int, int, int] = (32, 32, 3)) -> dict:
    """`improve-nas summary`: the name, parameter counts, multiply-adds and stages of the NASNet `hparams` builds.

    Its cells are `hparams.genotype`'s (a name or a .json file, `space.resolve_genotype`); the description holds the
    genotype (`genotype`, its JSON form as in `NASNetBuilder.shared`), its one-line text and its digest.
    """
    from improve_nas.models.summary import summarize

    genotype = space.resolve_genotype(hparams.genotype)
    return {"name": subnetwork_name(hparams, genotype), "num_classes": num_classes, "image_shape": list(image_shape),
            **genotype_fields(genotype), **summarize(num_classes=num_classes, image_shape=image_shape, **nasnet_kwargs(hparams),
                        **cell_kwargs(genotype))}


def format_description(description: dict) -> str:
    from improve_nas.models.summary import format_summary

    cells = f"cells: {description['genotype_text']}\n" if "genotype_text" in description else ""
    return f"{description['name']}\n{cells}{format_summary(description)}"
