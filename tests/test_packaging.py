"""Packaging and provenance: what ships, the package `submit` builds from a checkout or an installation, the source
digest both give, the one-line error of a missing extra, and what env.json records of the environment.

The installs run pip offline (`--no-index --no-build-isolation`, with the setuptools installed here) into temporary
`--target` directories: nothing is installed into this environment.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import pathlib
import subprocess
import sys
import tarfile

import pytest

from improve_nas import environment, extras
from improve_nas.cloud import package
from improve_nas.errors import UsageError
from improve_nas.source_digest import package_files, source_digest
from improve_nas.storage import gcs

ROOT = pathlib.Path(__file__).resolve().parents[1]


def pip_install(source, target) -> None:
    result = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                             "--no-build-isolation", "--target", str(target), str(source)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr


def installed_metadata(target) -> importlib.metadata.Distribution:
    (dist_info,) = pathlib.Path(target).glob("improve_nas-*.dist-info")
    return importlib.metadata.PathDistribution(dist_info)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """This checkout staged by `stage_source` and pip-installed (not editable) into a --target directory."""
    staged, target = tmp_path_factory.mktemp("staged"), tmp_path_factory.mktemp("installed")
    package.stage_source(package.find_source_tree(str(ROOT)), str(staged))
    pip_install(staged, target)
    return target


def test_an_install_ships_every_package_file_and_gives_the_checkout_s_digest(installed):
    checkout, install = package.find_source_tree(str(ROOT)), package.find_source_tree(str(installed))
    assert checkout.dist_info is None and install.dist_info is not None
    assert install.files == checkout.files  # the wheel holds exactly what the digest covers
    assert {"improve_nas/py.typed", "improve_nas/data/digits.npz"} <= set(install.files)
    assert (install.version, install.digest) == (checkout.version, checkout.digest) == ("0.1.0", source_digest())
    metadata = installed_metadata(installed)
    assert [(point.name, point.value) for point in metadata.entry_points.select(group="console_scripts")] == \
        [("improve-nas", "improve_nas.cli:main")]
    requires = metadata.requires
    assert not any("scikit" in requirement for requirement in requires)
    assert any(requirement.startswith("pyyaml") and 'extra == "cloud"' in requirement for requirement in requires)
    assert metadata.metadata["License"] == "Apache-2.0" and metadata.metadata["Requires-Python"] == ">=3.11"


def test_the_sdist_of_an_installation_installs_the_same_package(installed, tmp_path):
    tree = package.find_source_tree(str(installed))
    archive = package.build_sdist(tree, str(tmp_path))
    assert os.path.basename(archive) == tree.archive_name
    with tarfile.open(archive) as sdist:
        names = sdist.getnames()
    assert f"improve_nas-{tree.version}/pyproject.toml" in names and f"improve_nas-{tree.version}/LICENSE" in names
    again = tmp_path / "again"
    pip_install(archive, again)
    first, second = installed_metadata(installed), installed_metadata(again)
    assert sorted(second.requires) == sorted(first.requires)
    assert sorted(second.entry_points) == sorted(first.entry_points)
    assert second.metadata["Version"] == first.metadata["Version"]
    # The reinstalled package imports from there, loads its shipped data and names the same sources.
    probe = ("import improve_nas, improve_nas.source_digest as s, improve_nas.data.digits as d; "
             "print(improve_nas.__file__, s.source_digest(), d.load_digits().x_train.shape)")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path,
                            env=dict(os.environ, PYTHONPATH=str(again)), timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(again / "improve_nas" / "__init__.py"), tree.digest, "(1437,", "8,", "8,",
                                     "1)"]


def test_the_sdist_of_a_checkout_is_reproducible_and_leaves_the_checkout_clean(tmp_path):
    def debris():  # `pip install -e .` (the README's test command) leaves an egg-info: only new debris counts
        return {(path.name, path.stat().st_mtime_ns) for path in [ROOT / "dist", *ROOT.glob("*.egg-info")]
                if path.exists()}

    before = debris()
    tree = package.find_source_tree(str(ROOT))
    first = pathlib.Path(package.build_sdist(tree, str(tmp_path)))
    second_dir = tmp_path / "second"
    second_dir.mkdir()
    second = pathlib.Path(package.build_sdist(tree, str(second_dir)))
    assert first.read_bytes() == second.read_bytes()
    with tarfile.open(first) as sdist:
        names = set(sdist.getnames())
    assert {f"improve_nas-0.1.0/{name}" for name in ("pyproject.toml", "README.md", "LICENSE", *tree.files)} <= names
    assert debris() == before


def test_the_digest_follows_the_shipped_files_only(tmp_path):
    root = tmp_path / "src"
    (root / "improve_nas" / "__pycache__").mkdir(parents=True)
    (root / "pyproject.toml").write_text("[project]\nname = 'improve_nas'\n")
    (root / "improve_nas" / "__init__.py").write_text('__version__ = "9.9"\n')
    first = package.find_source_tree(str(root))
    (root / "improve_nas" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"junk")
    (root / "improve_nas" / "notes.txt").write_text("not shipped")
    (root / "README.md").write_text("top-level files are not the package's own")
    assert package.find_source_tree(str(root)).digest == first.digest
    (root / "improve_nas" / "extra.py").write_text("X = 1\n")
    second = package.find_source_tree(str(root))
    assert second.digest != first.digest and second.archive_name == f"improve_nas-9.9-{second.digest}.tar.gz"
    assert package_files(str(root)) == ("improve_nas/__init__.py", "improve_nas/extra.py")


def test_neither_checkout_nor_installation_is_a_usage_error(tmp_path):
    (tmp_path / "improve_nas").mkdir()
    (tmp_path / "improve_nas" / "__init__.py").write_text('__version__ = "1"\n')
    with pytest.raises(UsageError, match="pyproject.toml.*dist-info"):
        package.find_source_tree(str(tmp_path))


@pytest.mark.parametrize("requirement, expected", [
    ("numpy<2.6,>=1.26", ("numpy<2.6,>=1.26", None)),
    ('pyyaml<7,>=6.0; extra == "cloud"', ("pyyaml<7,>=6.0", "cloud")),
    ("improve-nas[cloud,jax]; extra == 'test'", ("improve-nas[cloud,jax]", "test")),
    ('tomli; python_version < "3.11" and extra == "test"', ('tomli; python_version < "3.11"', "test")),
    ('x; extra == "jax" and sys_platform == "linux"', ('x; sys_platform == "linux"', "jax")),
])
def test_requirements_are_split_from_their_extra(requirement, expected):
    assert package._split_extra(requirement) == expected


# --- the extras ----------------------------------------------------------------------------------------------


def test_a_gs_path_without_the_cloud_extra_names_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "google.cloud.storage", None)  # as if google-cloud-storage were not installed
    with pytest.raises(UsageError, match=r'^a gs:// path needs google-cloud-storage, .*pip install "improve_nas\[cloud\]"'):
        gcs.storage_client()


def test_submit_without_the_cloud_extra_is_one_line_and_exit_2(tmp_path):
    blocked = "import sys; sys.modules['yaml'] = None; from improve_nas.cli import main; sys.exit(main())"
    result = subprocess.run([sys.executable, "-c", blocked, "submit", "--config=config_test.yaml",
                             "--region=us-central1", "--staging_bucket=gs://b", "--dry_run", "--", "--preset=smoke"],
                            capture_output=True, text=True, cwd=ROOT, timeout=120,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert result.returncode == 2
    assert result.stderr.strip() == ('error: improve-nas submit needs PyYAML, which is not installed: '
                                     'pip install "improve_nas[cloud]"')
    assert result.stdout == ""


def test_every_extra_module_is_in_pyproject_s_extra():
    import tomllib

    optional = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for extra, modules in extras.EXTRAS.items():
        listed = {requirement.split("<")[0].split(">")[0].lower() for requirement in optional[extra]}
        assert {distribution.lower() for distribution in modules.values()} <= listed, extra


# --- env.json ------------------------------------------------------------------------------------------------


def test_env_json_records_the_sources_and_the_container(monkeypatch):
    monkeypatch.setenv(environment.IMAGE_VARIABLE, "us-docker.pkg.dev/p/r/improve-nas:abc")
    monkeypatch.setenv("CLOUD_ML_JOB_ID", "1234567890")
    monkeypatch.delenv("CLOUD_ML_TRIAL_ID", raising=False)
    record = json.loads(json.dumps(environment.describe_environment(seed=5)))  # JSON-serializable as written
    assert record["improve_nas"] == {"version": "0.1.0", "source_digest": package.find_source_tree(str(ROOT)).digest}
    assert record["container"] == {"image": "us-docker.pkg.dev/p/r/improve-nas:abc", "vertex_job_id": "1234567890",
                                   "vertex_trial_id": None}
    assert record["gpu"] is None  # no GPU here
    assert "scikit-learn" not in record["packages"] and record["packages"]["keras"]


def test_env_json_outside_a_container_says_so(monkeypatch):
    for variable in (environment.IMAGE_VARIABLE, *environment.VERTEX_VARIABLES.values()):
        monkeypatch.delenv(variable, raising=False)
    assert environment.describe_container() == {"image": None, "vertex_job_id": None, "vertex_trial_id": None}


def test_gpu_versions_come_from_the_backend_s_build_or_cuda_packages(monkeypatch):
    import tensorflow as tf

    build = tf.sysconfig.get_build_info()
    assert environment.describe_gpu("tensorflow") == {"cuda": build.get("cuda_version"),
                                                       "cudnn": build.get("cudnn_version")}
    versions = {"jax-cuda12-plugin": "0.10.2", "nvidia-cuda-runtime-cu12": "12.9.79", "nvidia-cudnn-cu12": "9.10.2"}
    monkeypatch.setattr(environment, "_version", versions.get)
    assert environment.describe_gpu("jax") == {"cuda": "12.9.79", "cudnn": "9.10.2", "packages": versions}
    monkeypatch.setattr(tf.sysconfig, "get_build_info", lambda: 1 / 0)
    assert environment.describe_gpu("tensorflow") == {"cuda": None, "cudnn": None}  # never fails the run
