"""The AdaNet algorithm on Keras 3, independent of any model family or data set.

Pieces, one module each:
    subnetwork       Builder / Generator interfaces; MemberRecord / EnsembleRecord (plain JSON)
    strategies       which members form each candidate ensemble (grow, solo, all)
    ensemblers       how members are mixed (mean; scalar/vector/matrix mixture weights + penalty)
    losses           label-smoothed CE, distillation, aux head, AdaNet loss, as named terms
    optimizers       TF1-semantics optimizers, restarting cosine schedule, per-candidate clipping
    ema              zero-debiased EMA of the training AdaNet loss
    iteration_model  the fused Keras model of one iteration (all candidates, one fit)
    selection        choosing the best candidate ensemble (SPEC §6.7)
"""

from improve_nas.adanet.ensemblers import (
    ComplexityRegularizedEnsembler, EnsemblerSpec, MeanEnsembler, restore_ensembler, serialize_ensembler)
from improve_nas.adanet.iteration_model import FrozenEnsemble, IterationModel, LossSpec
from improve_nas.adanet.losses import Distillation
from improve_nas.adanet.optimizers import make_optimizer
from improve_nas.adanet.selection import (
    Selection, evaluate_adanet_losses, needs_selection_losses, select_candidate)
from improve_nas.adanet.strategies import (
    AllStrategy, EnsembleCandidate, GrowStrategy, SoloStrategy, Strategy, make_strategy)
from improve_nas.adanet.subnetwork import Builder, EnsembleRecord, Generator, MemberRecord

__all__ = [
    "AllStrategy", "Builder", "ComplexityRegularizedEnsembler", "Distillation", "EnsembleCandidate",
    "EnsembleRecord", "EnsemblerSpec", "FrozenEnsemble", "Generator", "GrowStrategy", "IterationModel",
    "LossSpec", "MeanEnsembler", "MemberRecord", "Selection", "SoloStrategy", "Strategy",
    "evaluate_adanet_losses", "make_optimizer", "make_strategy", "needs_selection_losses",
    "restore_ensembler", "select_candidate", "serialize_ensembler",
]
