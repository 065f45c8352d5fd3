"""Which accelerators a Vertex AI training machine type can carry, and how many.

Vertex AI rejects an impossible pair only after the job is queued (minutes later, or after the package upload);
this table lets `improve-nas submit` refuse it at once. Machine types outside the table are not refused (Vertex AI adds
families faster than this table follows): `submit` warns and lets Vertex AI judge. It covers the machine families
Vertex AI custom training offers for GPU work (https://cloud.google.com/vertex-ai/docs/training/configure-compute)
plus the common CPU-only ones. Accelerator-optimized families (A2, A3, A4, G2) come with a fixed set of GPUs per
machine size; N1 takes 1, 2, 4 (or, for V100, 8) attachable GPUs or none.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Callable, Mapping

NO_ACCELERATOR = "ACCELERATOR_TYPE_UNSPECIFIED"  # the API's name for "no accelerator"
# The AcceleratorType values of the Vertex AI v1 REST reference that custom training takes (GPUs and TPUs). A type
# outside this list gets a warning (new hardware appears faster than this table), one inside it is checked against
# the machine family when the table knows the machine type.
ACCELERATOR_TYPES = ("NVIDIA_TESLA_K80", "NVIDIA_TESLA_P100", "NVIDIA_TESLA_V100", "NVIDIA_TESLA_P4",
                     "NVIDIA_TESLA_T4", "NVIDIA_TESLA_A100", "NVIDIA_A100_80GB", "NVIDIA_L4", "NVIDIA_H100_80GB",
                     "NVIDIA_H100_MEGA_80GB", "NVIDIA_H200_141GB", "NVIDIA_B200", "NVIDIA_GB200",
                     "NVIDIA_RTX_PRO_6000", "TPU_V2", "TPU_V3", "TPU_V4_POD", "TPU_V5_LITEPOD")

# L4 GPUs per g2-standard size.
_G2_GPUS = {4: 1, 8: 1, 12: 1, 16: 1, 32: 1, 24: 2, 48: 4, 96: 8}
_N1_GPUS = {"NVIDIA_TESLA_T4": (1, 2, 4), "NVIDIA_TESLA_P4": (1, 2, 4), "NVIDIA_TESLA_P100": (1, 2, 4),
            "NVIDIA_TESLA_V100": (1, 2, 4, 8)}


@dataclasses.dataclass(frozen=True)
class MachineFamily:
    """A set of machine types that share their accelerator rules.

    Attributes:
      name: how error messages show the family, e.g. `a2-highgpu-{1,2,4,8}g`.
      pattern: full-match regular expression over machine type names.
      accelerators: given the pattern's match, the allowed accelerator types and, per type, the allowed counts.
      cpu_only_allowed: whether the machine may run without any accelerator.
    """

    name: str
    pattern: str
    accelerators: Callable[[re.Match], Mapping[str, tuple[int, ...]]]
    cpu_only_allowed: bool

    def match(self, machine_type: str) -> re.Match | None:
        return re.fullmatch(self.pattern, machine_type)


def _fixed(accelerator: str, count: int | None = None) -> Callable[[re.Match], Mapping[str, tuple[int, ...]]]:
    """The machine carries exactly `count` GPUs, or as many as the name's first group says (a2-highgpu-4g: 4)."""
    return lambda match: {accelerator: (count if count is not None else int(match.group(1)),)}


FAMILIES = (
    MachineFamily("a2-highgpu-{1,2,4,8}g", r"a2-highgpu-(1|2|4|8)g", _fixed("NVIDIA_TESLA_A100"), False),
    MachineFamily("a2-megagpu-16g", r"a2-megagpu-16g", _fixed("NVIDIA_TESLA_A100", 16), False),
    MachineFamily("a2-ultragpu-{1,2,4,8}g", r"a2-ultragpu-(1|2|4|8)g", _fixed("NVIDIA_A100_80GB"), False),
    MachineFamily("a3-highgpu-{1,2,4,8}g", r"a3-highgpu-(1|2|4|8)g", _fixed("NVIDIA_H100_80GB"), False),
    MachineFamily("a3-megagpu-8g", r"a3-megagpu-8g", _fixed("NVIDIA_H100_MEGA_80GB", 8), False),
    MachineFamily("a3-ultragpu-8g", r"a3-ultragpu-8g", _fixed("NVIDIA_H200_141GB", 8), False),
    MachineFamily("a4-highgpu-8g", r"a4-highgpu-8g", _fixed("NVIDIA_B200", 8), False),
    MachineFamily("g2-standard-{4,8,12,16,24,32,48,96}", r"g2-standard-(4|8|12|16|24|32|48|96)",
                  lambda match: {"NVIDIA_L4": (_G2_GPUS[int(match.group(1))],)}, False),
    MachineFamily("n1-{standard,highmem,highcpu}-N", r"n1-(standard|highmem|highcpu)-\d+",
                  lambda match: _N1_GPUS, True),
    MachineFamily("{e2,n2,n2d,c2,c2d,m1}-*-N (CPU only)", r"(e2|n2|n2d|c2|c2d|m1)-[a-z]+-\d+", lambda match: {}, True),
)


@dataclasses.dataclass(frozen=True)
class AcceleratorRule:
    """What one machine type allows: accelerator type -> allowed counts, and whether none is fine."""

    machine_type: str
    family: str
    accelerators: Mapping[str, tuple[int, ...]]
    cpu_only_allowed: bool


def accelerator_rule(machine_type: str) -> AcceleratorRule | None:
    """The accelerator rule of `machine_type`, or None when the table does not know it."""
    for family in FAMILIES:
        match = family.match(machine_type)
        if match:
            return AcceleratorRule(machine_type, family.name, dict(family.accelerators(match)),
                                   family.cpu_only_allowed)
    return None


def known_families() -> str:
    """The families of the table, for error messages."""
    return ", ".join(family.name for family in FAMILIES)
