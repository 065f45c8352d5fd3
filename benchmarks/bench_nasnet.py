"""Training throughput of one NASNet: prints one JSON object.

    python benchmarks/bench_nasnet.py --num_cells=18 --num_conv_filters=32 --batch_size=128 --steps=50
    KERAS_BACKEND=jax python benchmarks/bench_nasnet.py --dtype=bfloat16

See `improve_nas.models.bench.benchmark_training_step` for what is measured.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout too

from improve_nas.models.bench import DTYPE_POLICIES, benchmark_training_step  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num_cells", type=int, default=3)
    parser.add_argument("--num_conv_filters", type=int, default=10)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10, help="measured steps, after one compile step")
    parser.add_argument("--image_size", type=int, default=32)
    parser.add_argument("--num_classes", type=int, default=10)
    parser.add_argument("--dtype", choices=sorted(DTYPE_POLICIES), default="float32")
    parser.add_argument("--data_format", choices=["NHWC", "NCHW"], default="NHWC")
    args = parser.parse_args(argv)
    print(json.dumps(benchmark_training_step(**vars(args))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
