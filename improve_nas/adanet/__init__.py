"""The AdaNet algorithm on Keras 3, independent of any model family or data set.

The algorithm, one module each:
    subnetwork       Builder / Generator interfaces; MemberRecord / EnsembleRecord (plain JSON)
    strategies       which members form each candidate ensemble (grow, solo, all)
    ensemblers       how members are mixed (mean; scalar/vector/matrix mixture weights + penalty)
    losses           label-smoothed CE, distillation, aux head, AdaNet loss, as named terms
    optimizers       TF1-semantics optimizers, restarting cosine schedule, per-candidate clipping
    ema              zero-debiased EMA of the training AdaNet loss
    step_value       a metric holding the last step's value (TensorBoard's per-step losses)
    iteration_model  the fused Keras model of one iteration (all candidates, one fit)
    ensemble_model   a finished ensemble as one Keras model (evaluation, serving)
    selection        choosing the best candidate ensemble
    choices          the names of the string-selected parts above, importable without Keras

`runtime/` executes it: the iteration loop (`engine`), the run directory and checkpoints, devices and distribution,
batches, inference and evaluation, memory release.

Strategies and ensemblers are chosen by name or passed as objects: `EngineSettings.strategy` takes a `Strategy`
instance, `EngineSettings.ensembler` an `EnsemblerSpec` (or a subclass whose `build` returns a registered layer).
"""

from improve_nas.lazy_exports import lazy_exports

# Names exported here, by the module that defines them. Loaded on first access (PEP 562), so that importing one
# Keras-free module of the package (`cluster`, `distribution`'s checks) does not import Keras and TensorFlow.
_EXPORTS = {
    "runtime.engine": ("EngineSettings", "Partitions", "grow_ensemble", "load_final_ensemble"),
    "ensemblers": ("ComplexityRegularizedEnsembler", "EnsemblerSpec", "MeanEnsembler", "restore_ensembler",
                   "serialize_ensembler"),
    "iteration_model": ("FrozenEnsemble", "IterationModel", "LossSpec"),
    "losses": ("Distillation",),
    "optimizers": ("make_optimizer",),
    "runtime.run_directory": ("RunDirectory",),
    "selection": ("Selection", "SelectionPass", "evaluate_adanet_losses", "evaluate_selection", "needs_selection_losses",
                  "select_candidate"),
    "strategies": ("AllStrategy", "EnsembleCandidate", "GrowStrategy", "SoloStrategy", "Strategy", "make_strategy"),
    "subnetwork": ("Builder", "CandidateRecord", "EnsembleRecord", "Generator", "MemberRecord"),
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
