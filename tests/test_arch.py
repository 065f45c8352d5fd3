"""`improve-nas arch`: the cells of a run's ensemble as SVG, PNG, DOT, text and JSON, from hand-written run directories.

No training: each iteration directory holds an architecture.json written here (with its manifest, as a run writes
it). The last ensemble has four members: one trained before genotypes were recorded (shown as NASNet-A),
a uniformly sampled genotype, AmoebaNet-A and DARTS-V2.
"""

import collections
import json
import os
import struct
import subprocess
import sys
import xml.etree.ElementTree as ElementTree

import numpy as np
import pytest

from improve_nas import cli, ensemble_cells
from improve_nas.search import drawing, space
from improve_nas.storage import gcs, integrity

SAMPLED = space.sample(np.random.default_rng(14), "nasnet")
# (member name, genotype recorded in architecture.json or None, the genotype to expect)
MEMBERS = [("t0_NasNet_A_6.0_96_cifar", None, space.NASNET_A),
           ("t1_Arch_sampled_1.0_96_cifar", SAMPLED, SAMPLED),  # its output: the unused states
           ("t2_Arch_amoeba_1.0_96_cifar", space.AMOEBANET_A, space.AMOEBANET_A),
           ("t3_Arch_darts_1.0_96_cifar", space.DARTS_V2, space.DARTS_V2)]
LAST = len(MEMBERS) - 1


def member_record(name, genotype):
    iteration = int(name.split("_")[0][1:])
    shared = {"num_cells": 3, "num_conv_filters": 4}
    if genotype is not None:
        shared.update(genotype=genotype.to_dict(), genotype_hash=genotype.digest())
    return {"name": name, "iteration": iteration, "builder_name": name.split("_", 1)[1], "shared": shared,
            "complexity": 1.0}


def write_iteration(root, iteration, members, *, manifest=True):
    directory = root / "iterations" / str(iteration)
    directory.mkdir(parents=True)
    ensemble = {"name": f"t{iteration}_ensemble", "iteration": iteration,
                "members": [member_record(name, genotype) for name, genotype, _ in members],
                "ensembler": {"class_name": "MeanEnsembler", "config": {}}}
    (directory / "architecture.json").write_text(json.dumps({"iteration": iteration, "ensemble": ensemble}))
    (directory / "summary.json").write_text(json.dumps({"iteration": iteration, "members": []}))
    if manifest:
        integrity.write_manifest(str(directory))
    return directory


def make_run_dir(root, iterations=len(MEMBERS)):
    root.mkdir(parents=True)
    (root / "config.json").write_text("{}")
    for t in range(iterations):
        write_iteration(root, t, MEMBERS[:t + 1])
    return root


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return make_run_dir(tmp_path_factory.mktemp("arch") / "run")


def arch(capsys, *args):
    """(exit code, stdout, stderr) of `improve-nas arch ARGS`, in this process."""
    code = cli.main(["arch", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def files_under(path):
    return sorted((os.path.relpath(os.path.join(d, n), path), os.path.getsize(os.path.join(d, n)))
                  for d, _, names in os.walk(path) for n in names)


def operation_labels(genotypes):
    return collections.Counter(drawing.operation_label(op) for g in genotypes for cell in g.cells
                               for op in cell.operations)


# --- the drawing's graph and layout -----------------------------------------------------------------------------

@pytest.mark.parametrize("genotype", [space.NASNET_A, space.AMOEBANET_A, space.DARTS_V2, SAMPLED])
def test_a_cell_graph_has_the_inputs_a_node_per_block_and_the_output(genotype):
    for cell in genotype.cells:
        graph = drawing.cell_graph(cell)
        assert [n.id for n in graph.nodes] == [f"h{s}" for s in range(2 + cell.num_blocks)] + ["concat"]
        operations = [(e.source, e.target, e.label) for e in graph.edges if e.label]
        assert operations == [(f"h{state}", f"h{2 + i}", drawing.operation_label(op))
                              for i, block in enumerate(cell.blocks) for op, state in block]
        assert sorted(e.source for e in graph.edges if e.target == "concat") == sorted(
            f"h{s}" for s in cell.output_states)
        position = drawing.layered_layout(graph)
        assert len(set(position.values())) == len(graph.nodes)  # no two nodes on one spot
        assert all(position[e.source][0] < position[e.target][0] for e in graph.edges)  # edges run left to right
        assert {position["h0"][0], position["h1"][0]} == {0}


def test_none_is_drawn_as_identity():
    assert drawing.operation_label("none") == "identity"
    assert drawing.operation_label("separable_3x3_2") == "separable_3x3_2"


# --- the formats ------------------------------------------------------------------------------------------------

def test_text_is_the_last_iteration_one_line_per_member_that_reads_back(run_dir, capsys):
    code, out, err = arch(capsys, run_dir)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == f"# {run_dir}: iteration {LAST}, ensemble t{LAST}_ensemble, {len(MEMBERS)} members"
    assert len(lines) == 1 + len(MEMBERS)
    for line, (name, _, genotype) in zip(lines[1:], MEMBERS):
        member, digest, text = line.split(maxsplit=2)
        assert (member, digest) == (name, genotype.digest())
        assert space.Genotype.from_text(text).digest() == digest


def test_json_round_trips_to_the_same_digests(run_dir, capsys):
    code, out, _ = arch(capsys, run_dir, "--format=json")
    assert code == 0
    document = json.loads(out)
    assert (document["iteration"], document["ensemble"]) == (LAST, f"t{LAST}_ensemble")
    assert [m["name"] for m in document["members"]] == [name for name, _, _ in MEMBERS]
    for record, (_, recorded, genotype) in zip(document["members"], MEMBERS):
        assert space.Genotype.from_dict(record["genotype"]).digest() == record["genotype_hash"] == genotype.digest()
        assert space.Genotype.from_text(record["text"]) == genotype
        assert record["genotype_recorded"] is (recorded is not None)


def test_dot_parses_back_with_a_node_per_state_and_an_edge_per_operation_and_output(run_dir, capsys):
    import pydot

    code, out, _ = arch(capsys, run_dir, "--format=dot", "--iteration=1")  # pydot's parser is slow: two members
    assert code == 0
    members = MEMBERS[:2]
    (graph,) = pydot.graph_from_dot_data(out)
    nodes, edges, labels = [], [], []

    def walk(g):
        nodes.extend(n.get_name() for n in g.get_nodes() if n.get_name() not in ("node", "edge", "graph"))
        edges.extend(g.get_edges())
        labels.append(str(g.get("label")))
        for sub in g.get_subgraphs():
            walk(sub)

    walk(graph)
    cells = [cell for _, _, genotype in members for cell in genotype.cells]
    assert len(nodes) == len(set(nodes)) == sum(2 + cell.num_blocks + 1 for cell in cells)
    assert len(edges) == sum(2 * cell.num_blocks + len(cell.output_states) for cell in cells)
    drawn = collections.Counter(e.get("label").strip('"') for e in edges if e.get("label"))
    assert drawn == operation_labels(genotype for _, _, genotype in members)
    for name, _, genotype in members:
        assert any(name in label and genotype.digest() in label for label in labels)


def test_svg_holds_every_member_and_operation_and_needs_no_graphviz(run_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no `dot` binary could be found
    out_path = tmp_path / "cells.svg"
    code, out, err = arch(capsys, run_dir, f"--out={out_path}")  # the format from the extension
    assert (code, err) == (0, "")
    assert out.strip() == f"wrote {out_path}: {run_dir}: iteration {LAST}, ensemble t{LAST}_ensemble, 4 members"
    root = ElementTree.fromstring(out_path.read_bytes())
    assert root.tag.endswith("svg")
    texts = [text.strip() for text in root.itertext() if text.strip()]
    for name, _, genotype in MEMBERS:
        assert any(name in text and genotype.digest() in text for text in texts), name
    expected = operation_labels(genotype for _, _, genotype in MEMBERS)
    assert collections.Counter(text for text in texts if text in expected) == expected  # one label per operation
    assert texts.count("normal cell") == texts.count("reduction cell") == len(MEMBERS)


def test_png_is_a_png_of_a_row_per_member(run_dir, tmp_path, capsys):
    out_path = tmp_path / "sub" / "cells.png"
    code, _, err = arch(capsys, run_dir, "--format=png", f"--out={out_path}", "--iteration=1")
    assert (code, err) == (0, "")
    data = out_path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk
    assert width > 800 and height > 2 * 250
    assert [name for name in os.listdir(out_path.parent)] == ["cells.png"]  # no temporary file left


def test_iteration_picks_that_iterations_ensemble(run_dir, capsys):
    for iteration in range(len(MEMBERS)):
        code, out, _ = arch(capsys, run_dir, f"--iteration={iteration}")
        assert code == 0
        assert f"iteration {iteration}," in out.splitlines()[0]
        assert [line.split()[0] for line in out.splitlines()[1:]] == [n for n, _, _ in MEMBERS[:iteration + 1]]


def test_text_to_a_file(run_dir, tmp_path, capsys):
    out_path = tmp_path / "cells.txt"
    code, out, _ = arch(capsys, run_dir, f"--out={out_path}")
    assert code == 0 and out.startswith("wrote ")
    assert out_path.read_text() == ensemble_cells.render(ensemble_cells.load(str(run_dir)), "text")


def test_a_gs_run_directory_reads_like_a_local_one(run_dir, gcs_emulator, capsys):
    url = f"gs://{gcs_emulator.bucket}/runs/r"
    for name, _ in files_under(run_dir):
        gcs.upload_file(str(run_dir / name), f"{url}/{name}")
    code, out, _ = arch(capsys, url, "--format=json")
    assert code == 0
    document = json.loads(out)
    assert document["iteration"] == LAST
    assert [m["genotype_hash"] for m in document["members"]] == [g.digest() for _, _, g in MEMBERS]
    code, _, err = arch(capsys, url, "--iteration=9")
    assert code == 2 and err.strip() == f"error: --iteration=9 is not a finished iteration of {url!r}; valid: 0..3"


# --- bad input: one line, exit 2, nothing written ----------------------------------------------------------------

def damage(root, how):
    """Makes run directory `root`'s last architecture.json damaged in the way `how` names."""
    directory = root / "iterations" / str(LAST)
    path = directory / "architecture.json"
    if how == "truncated":  # the manifest notices
        path.write_text(path.read_text()[:-40])
        return
    (directory / "manifest.json").unlink()  # written before manifests: the content itself must be checked
    value = json.loads(path.read_text())
    if how == "not json":
        path.write_text("{not json")
    elif how == "no ensemble":
        path.write_text(json.dumps({"iteration": LAST}))
    elif how == "bad genotype":
        value["ensemble"]["members"][1]["shared"]["genotype"]["normal"]["blocks"][0][0][0] = "sep_conv_9x9"
        path.write_text(json.dumps(value))
    elif how == "member not a record":
        value["ensemble"]["members"][2] = "t2_Arch_darts"
        path.write_text(json.dumps(value))


BAD = {  # name: (how to set up the model dir, arguments after it, what the one line must contain)
    "no such directory": ("missing", [], "does not exist"),
    "not a run directory": ("empty", [], "is not a run directory"),
    "no finished iteration": ("unfinished", [], "no iteration of"),
    "iteration out of range": ("run", ["--iteration=4"], "--iteration=4 is not a finished iteration of"),
    "negative iteration": ("run", ["--iteration=-1"], "valid: 0..3"),
    "iteration not a number": ("run", ["--iteration=last"], "invalid int value: 'last'"),
    "unknown format": ("run", ["--format=pdf"], "--format='pdf' is invalid; choose one of: svg, png, dot, text, json"),
    "format typo": ("run", ["--format=sgv"], "did you mean svg?"),
    "svg without --out": ("run", ["--format=svg"], "give --out=PATH, e.g. --out=cells.svg"),
    "png without --out": ("run", ["--format=png"], "give --out=PATH"),
    "format against extension": ("run", ["--format=png", "--out={out}/cells.svg"], "names a .svg file but"),
    "--out is a directory": ("run", ["--out={out}"], "is a directory"),
    "--out under a file": ("run", ["--format=svg", "--out={run}/config.json/cells.svg"], "is a file"),
    "--out on a bucket": ("run", ["--out=gs://b/cells.svg"], "local file"),
    "unsupported scheme": ("s3", [], "unsupported scheme 's3'"),
    "truncated architecture.json": ("truncated", ["--out={out}/cells.svg"], "architecture.json is damaged (size"),
    "architecture.json not json": ("not json", ["--out={out}/cells.png"], "is damaged (not JSON"),
    "no ensemble": ("no ensemble", [], "is damaged (no ensemble with members)"),
    "bad genotype": ("bad genotype", ["--format=json", "--out={out}/cells.json"],
                     "the genotype of member t1_Arch_sampled_1.0_96_cifar: unknown operation 'sep_conv_9x9'"),
    "member not a record": ("member not a record", [], "member 2 is not a member record"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_line_exit_2_and_nothing_written(case, tmp_path, capsys):
    setup, arguments, fragment = BAD[case]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    model_dir = tmp_path / "run"
    if setup == "empty":
        model_dir.mkdir()
    elif setup == "unfinished":
        model_dir.mkdir()
        (model_dir / "config.json").write_text("{}")
        (model_dir / "checkpoints" / "0").mkdir(parents=True)
    elif setup == "s3":
        model_dir = "s3://bucket/run"
    elif setup != "missing":
        make_run_dir(model_dir)
        if setup != "run":
            damage(model_dir, setup)
    before = files_under(tmp_path)
    code, out, err = arch(capsys, model_dir, *(a.format(out=out_dir, run=model_dir) for a in arguments))
    assert code == 2
    assert out == "" and len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert fragment in err
    assert files_under(tmp_path) == before


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes anywhere")
def test_an_out_without_permission_is_one_line(run_dir, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    code, _, err = arch(capsys, run_dir, f"--out={locked}/cells.svg")
    assert code == 2 and "permission denied" in err and os.listdir(locked) == []


def test_the_damage_way_out_names_the_iteration_to_retrain(tmp_path, capsys):
    model_dir = make_run_dir(tmp_path / "run")
    damage(model_dir, "not json")
    code, _, err = arch(capsys, model_dir, "--iteration=3")
    assert code == 2 and "rerun the training command to retrain iteration 3" in err
    assert arch(capsys, model_dir, "--iteration=2")[0] == 0  # the earlier ensembles still draw


def test_arch_starts_no_framework(run_dir):
    """Drawing reads JSON: TensorFlow, Keras and JAX stay unimported (seconds, not a framework's start-up)."""
    code = ("import sys; from improve_nas.cli import main; code = main(['arch', %r, '--format=json']); "
            "print(code, sorted(m for m in ('tensorflow', 'keras', 'jax') if m in sys.modules))" % str(run_dir))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.splitlines()[-1] == "0 []", result.stderr
