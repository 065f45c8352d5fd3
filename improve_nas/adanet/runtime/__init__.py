"""What executes the AdaNet algorithm: nothing here decides what is trained, only how and where.

    engine           the iteration loop: grow_ensemble(EngineSettings, Partitions, ...), load_final_ensemble
    run_directory    RunDirectory: a run's finished iterations on disk (published whole, verified on load)
    checkpoints      mid-iteration state, written atomically; a damaged newest one falls back to an older one
    batches          the order of training batches, reproducible from (seed, step)
    device_data      the training partition on the device, batches gathered there
    inference        selection and test passes in equal chunks, halved on out-of-memory
    evaluation       test metrics of an ensemble and its members
    callbacks        progress bar and time-based checkpoint stops
    memory           releasing what an iteration leaves behind (Keras session, JAX caches, TF registrations)
    distribution     one device or data parallel over local devices; tf_distribution, tf_multi_worker, cluster
"""
