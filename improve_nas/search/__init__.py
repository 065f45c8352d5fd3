"""What proposes the subnetworks the AdaNet engine trains: NASNet builders and generators.

    builders         NASNetBuilder (one NASNet candidate: hparams and a genotype) and `improve-nas summary`'s description
    generators       simple (the same NASNet every iteration) and dynamic (a deeper and a wider one than the last);
                     the registry of every generator
    strategy_generators  random, evolution and controller: the strategies as generators over the engine's record
    space            the NASNet cell search space as data: operation sets, genotypes (canonical hash, JSON, text),
                     NASNet-A / AmoebaNet-A / DARTS-V2, uniform sampling and mutation
    proposals        search strategies as pure functions of (seed, iteration, history): random, regularized evolution
                     (parents by tournament or from the current ensemble)
    controller       the NAS-RL / NASNet REINFORCE controller (Keras), a pure function of (seed, history, its state)
    synthetic        a SYNTHETIC objective over genotypes (no training), and `simulate` to test that strategies search
    drawing          genotypes as pictures: a cell as a graph, DOT (pydot), SVG/PNG (matplotlib), text, JSON

Generators reach the engine only through `improve_nas.adanet.Generator`.
"""
