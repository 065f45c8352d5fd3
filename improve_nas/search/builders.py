"""The improve_nas subnetwork: a NASNet-A builder for the AdaNet engine, its name, and its description.

This is where the two halves meet: `improve_nas.models` knows NASNet and nothing of AdaNet, `improve_nas.adanet`
knows AdaNet and nothing of NASNet; this module maps hyperparameters onto a NASNet and presents it as an AdaNet
`Builder`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from improve_nas.adanet.subnetwork import Builder
from improve_nas.config import HParams


def subnetwork_name(hparams: HParams) -> str:
    """The original builder name (docs/original_code.md §2.4), e.g. `NasNet_A_6.0_768_cifar`.

    `num_cells / 3` is printed with true division (`2.0`), as the original did, so names match its directories.
    """
    name = f"NasNet_A_{hparams.num_cells / 3}_{hparams.num_conv_filters * 24}"
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
    """One NASNet-A candidate; persists its `num_cells` and `num_conv_filters` for the dynamic generator.

    `dtype` is the Keras dtype policy of the NASNet (e.g. `mixed_bfloat16`: computes in bfloat16, float32 variables,
    float32 outputs); None takes the global policy.
    """

    def __init__(self, hparams: HParams, *, total_training_steps: int, dtype: str | None = None):
        self._hparams = hparams
        self._total_training_steps = total_training_steps
        self._dtype = dtype

    @property
    def hparams(self) -> HParams:
        return self._hparams

    @property
    def name(self) -> str:
        return subnetwork_name(self._hparams)

    def shared(self) -> dict[str, Any]:
        return {"num_cells": self._hparams.num_cells, "num_conv_filters": self._hparams.num_conv_filters}

    def build_subnetwork(self, *, num_classes: int, input_shape: tuple[int, ...]):
        from improve_nas.models.nasnet import NASNet

        model = NASNet(num_classes=num_classes, name=self.name, dtype=self._dtype,
                       **nasnet_kwargs(self._hparams, total_training_steps=self._total_training_steps))
        model.build((None, *input_shape))
        return model

    def with_architecture(self, *, num_cells: int, num_conv_filters: int) -> NASNetBuilder:
        hparams = dataclasses.replace(self._hparams, num_cells=num_cells, num_conv_filters=num_conv_filters)
        return NASNetBuilder(hparams, total_training_steps=self._total_training_steps, dtype=self._dtype)


def describe(hparams: HParams, *, num_classes: int = 10, image_shape: tuple[int, int, int] = (32, 32, 3)) -> dict:
    """`improve-nas summary`: the name, parameter counts, multiply-adds and stages of the NASNet `hparams` builds."""
    from improve_nas.models.summary import summarize

    return {"name": subnetwork_name(hparams), "num_classes": num_classes, "image_shape": list(image_shape),
            **summarize(num_classes=num_classes, image_shape=image_shape, **nasnet_kwargs(hparams))}


def format_description(description: dict) -> str:
    from improve_nas.models.summary import format_summary

    return f"{description['name']}\n{format_summary(description)}"
