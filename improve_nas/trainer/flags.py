"""The command-line flags of `improve-nas train` and `python -m improve_nas.trainer.trainer`.

Every flag of the 2019 trainer keeps its name, type, default and meaning (SPEC_ORIGINAL §1.1); the rest are this
project's. Defined once here so both entry points share them.
"""

from __future__ import annotations

from absl import flags

from improve_nas.data import DATASET_CHOICES
from improve_nas.presets import PRESETS

# Flags whose values become `Config` fields when given explicitly; the others are handled by the entry point.
CONFIG_FLAGS = ("batch_size", "train_steps", "save_summary_steps", "dataset", "tf_random_seed", "eval_steps",
                "save_checkpoints_secs", "save_checkpoints_steps", "keep_checkpoint_max", "data_dir",
                "distribution", "precision", "inference_batch_size")

flags.DEFINE_integer("batch_size", 32, "Minibatch size for training; evaluation reads eval_steps batches of it.")
flags.DEFINE_integer("train_steps", 1_000_000, "Total training steps over all AdaNet iterations; each iteration "
                     "trains train_steps // boosting_iterations steps.")
flags.DEFINE_integer("save_summary_steps", 2000, "Steps between TensorBoard summaries.")
flags.DEFINE_string("hparams", "", "Comma-separated name=value overrides of the hyperparameters, e.g. "
                    "'num_cells=18,num_conv_filters=32'.")
flags.DEFINE_string("dataset", "", f"One of: {', '.join(DATASET_CHOICES)}.")
flags.DEFINE_integer("tf_random_seed", None, "Root random seed; -1 or unset draws a fresh one (recorded in env.json).")
flags.DEFINE_integer("eval_steps", None, "Test batches per evaluation; unset evaluates the whole test partition.")
flags.DEFINE_integer("save_checkpoints_secs", 600, "Seconds between checkpoints; 0 turns them off. Exactly one of "
                     "save_checkpoints_secs and save_checkpoints_steps must be non-zero.")
flags.DEFINE_integer("save_checkpoints_steps", 0, "Steps between checkpoints; 0 turns them off.")
flags.DEFINE_string("data_params", "", "Comma-separated name=value overrides of the input pipeline, e.g. "
                    "'augmentation=basic,cutout=True'.")
flags.DEFINE_integer("keep_checkpoint_max", 5, "Most recent checkpoints to keep.")
flags.DEFINE_string("job-dir", "", "Default model_dir (Vertex AI / Cloud ML Engine pass it).")
flags.DEFINE_string("model_dir", None, "Run directory: checkpoints, iterations, report (local path or gs://).")
flags.DEFINE_string("preset", None, f"Named experiment to start from; flags override it. One of: {', '.join(PRESETS)}.")
flags.DEFINE_string("data_dir", None, "TFDS data directory for cifar10, cifar100 and tfds:NAME (local or gs://).")
flags.DEFINE_string("distribution", "none", "none: train on one device; mirrored: data parallel over all local GPUs "
                    "(else all CPU devices), each --batch_size batch split evenly across them "
                    "(TensorFlow MirroredStrategy, JAX DataParallel); multi_worker: over every device of every "
                    "process TF_CONFIG names (Vertex AI multi-replica jobs; TensorFlow only), only the chief writes "
                    "model_dir.")
flags.DEFINE_string("precision", "float32", "Keras dtype policy of the NASNet members: float32, mixed_bfloat16 or "
                    "mixed_float16 (compute in 16 bits, float32 variables; losses, mixture weights and metrics stay "
                    "float32; mixed_float16 adds dynamic loss scaling). Cannot change when resuming.")
flags.DEFINE_integer("inference_batch_size", None, "Images per inference call in candidate selection and test "
                     "evaluation (speed only: no result depends on it); unset: 1024 on a GPU or TPU, 128 on a CPU. "
                     "Halved whenever it runs out of memory.")

flags.DEFINE_boolean("force_unlock", False, "Take model_dir's lock even though another process holds it (one whose "
                     "host is gone, or a gs:// lock left by a killed job on another host). Not part of the run's "
                     "configuration.")

FLAGS = flags.FLAGS


def explicit_config_flags() -> dict:
    """The run-level flags given on the command line (so a preset's values survive the others' defaults)."""
    values = {name: FLAGS[name].value for name in CONFIG_FLAGS if FLAGS[name].present}
    if values.get("tf_random_seed") == -1:  # the original's sentinel for "no seed"
        values["tf_random_seed"] = None
    return values
