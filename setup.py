"""Installs the improve_nas package and its `improve-nas` console script."""

import pathlib
import re

from setuptools import find_packages, setup

HERE = pathlib.Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "improve_nas" / "__init__.py").read_text()).group(1)
REQUIREMENTS = [line.strip() for line in (HERE / "requirements.txt").read_text().splitlines()
                if line.strip() and not line.startswith("#")]

setup(
    name="improve_nas",
    version=VERSION,
    description="Grow ensembles of NASNet-A image classifiers with AdaNet (Macko et al., 2019) on Keras 3.",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["improve_nas", "improve_nas.*"]),
    install_requires=REQUIREMENTS,
    extras_require={
        "test": ["pytest>=7.4,<10", "jax[cpu]>=0.4.30,<0.13", "gcp-storage-emulator>=2026.7.19,<2027",
                 "ruff>=0.6,<1"],
    },
    entry_points={"console_scripts": ["improve-nas=improve_nas.cli:main"]},
)
