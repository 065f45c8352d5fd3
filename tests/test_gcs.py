"""GCS helpers and DirectoryMirror, against a real local GCS emulator (no network beyond 127.0.0.1)."""

import os

import pytest

from improve_nas.errors import UsageError
from improve_nas.storage import gcs


def write(path, text):
    """Writes a file the way the run directory does: a new file renamed into place."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".new", "w") as handle:
        handle.write(text)
    os.replace(path + ".new", path)


def remote_tree(url):
    """Relative name -> content of every object under `url`."""
    prefix = url.rstrip("/") + "/"
    return {obj.url[len(prefix):]: gcs.read_bytes(obj.url).decode() for obj in gcs.list_blobs(prefix)}


def local_tree(root):
    found = {}
    for directory, _, names in os.walk(root):
        for name in names:
            path = os.path.join(directory, name)
            with open(path) as handle:
                found[os.path.relpath(path, root).replace(os.sep, "/")] = handle.read()
    return found


def make_run_dir(root):
    """A run directory as training leaves it: a finished iteration, checkpoints, and writes in progress."""
    write(f"{root}/config.json", "{}")
    write(f"{root}/iterations/0/members/m0.keras", "weights-0")
    write(f"{root}/iterations/0/summary.json", "summary-0")
    write(f"{root}/iterations/0/architecture.json", "arch-0")
    write(f"{root}/checkpoints/1/ckpt-4.npz", "ckpt-4")
    write(f"{root}/iterations/.staging-1/architecture.json", "half-written")
    write(f"{root}/.tmp-report.json", "half-written")


@pytest.mark.parametrize("url, expected", [
    ("gs://bucket/a/b.txt", ("bucket", "a/b.txt")),
    ("gs://bucket", ("bucket", "")),
    ("gs://my.bucket-1/dir/", ("my.bucket-1", "dir/")),
])
def test_parse_gs_url(url, expected):
    assert gcs.parse_gs_url(url) == expected


@pytest.mark.parametrize("url", ["/local/path", "s3://bucket/x", "gs://", "gs://Bucket/x", "gs://-b/x"])
def test_parse_gs_url_rejects_what_is_not_a_gs_url(url):
    with pytest.raises(UsageError, match="gs://|bucket"):
        gcs.parse_gs_url(url)


def test_object_round_trips(gcs_emulator, tmp_path):
    base = f"gs://{gcs_emulator.bucket}"
    gcs.upload_bytes(b"hello", f"{base}/run/a.txt")
    (tmp_path / "b.bin").write_bytes(b"\x00\x01")
    gcs.upload_file(str(tmp_path / "b.bin"), f"{base}/run/sub/b.bin")
    assert gcs.read_bytes(f"{base}/run/a.txt") == b"hello"
    gcs.download_file(f"{base}/run/sub/b.bin", str(tmp_path / "out" / "b.bin"))
    assert (tmp_path / "out" / "b.bin").read_bytes() == b"\x00\x01"
    assert gcs.exists(f"{base}/run/a.txt") and not gcs.exists(f"{base}/run/missing")
    (tmp_path / "a.txt").write_bytes(b"hello")
    listed = {obj.url: (obj.size, obj.md5) for obj in gcs.list_blobs(f"{base}/run/")}
    assert listed == {f"{base}/run/a.txt": (5, gcs.file_md5(str(tmp_path / "a.txt"))),
                      f"{base}/run/sub/b.bin": (2, gcs.file_md5(str(tmp_path / "b.bin")))}


def test_missing_objects_raise_file_not_found(gcs_emulator, tmp_path):
    with pytest.raises(FileNotFoundError):
        gcs.read_bytes(f"gs://{gcs_emulator.bucket}/nothing")
    with pytest.raises(FileNotFoundError):
        gcs.download_file(f"gs://{gcs_emulator.bucket}/nothing", str(tmp_path / "x"))
    assert os.listdir(tmp_path) == []  # no temporary file left behind


def test_delete_prefix_deletes_a_directory_only(gcs_emulator):
    base = f"gs://{gcs_emulator.bucket}"
    for name in ("run/a", "run/b/c", "run2/a", "other"):
        gcs.upload_bytes(b"x", f"{base}/{name}")
    assert gcs.delete_prefix(f"{base}/run") == 2
    assert sorted(obj.url for obj in gcs.list_blobs(base)) == [f"{base}/other", f"{base}/run2/a"]
    with pytest.raises(UsageError, match="refusing"):
        gcs.delete_prefix(f"{base}/")


def test_mirror_push_uploads_everything_but_writes_in_progress_pointer_files_last(gcs_emulator, tmp_path,
                                                                                monkeypatch):
    uploads = []
    original = gcs.upload_file
    monkeypatch.setattr(gcs, "upload_file", lambda path, url, **kw: (uploads.append(url), original(path, url, **kw)))
    url = f"gs://{gcs_emulator.bucket}/runs/r"
    make_run_dir(tmp_path / "work")
    mirror = gcs.DirectoryMirror(url, str(tmp_path / "work"))
    pushed = mirror.push()
    expected = {"config.json": "{}", "iterations/0/members/m0.keras": "weights-0",
                "iterations/0/summary.json": "summary-0", "iterations/0/architecture.json": "arch-0",
                "checkpoints/1/ckpt-4.npz": "ckpt-4"}
    assert remote_tree(url) == expected
    assert sorted(pushed) == sorted(expected)
    # The iteration's pointer file goes up after the files it names.
    assert uploads[-1] == f"{url}/iterations/0/architecture.json"
    assert [u.rsplit("/runs/r/", 1)[1] for u in uploads] == pushed


def test_mirror_push_uploads_only_what_changed_and_deletes_what_was_deleted(gcs_emulator, tmp_path, monkeypatch):
    url = f"gs://{gcs_emulator.bucket}/runs/r"
    work = str(tmp_path / "work")
    make_run_dir(work)
    mirror = gcs.DirectoryMirror(url, work)
    mirror.push()
    hashed = []
    original_md5 = gcs.file_md5
    monkeypatch.setattr(gcs, "file_md5", lambda path: (hashed.append(path), original_md5(path))[1])
    assert mirror.push() == []
    assert hashed == []  # unchanged files are recognised by their stat, without reading them

    write(f"{work}/checkpoints/1/ckpt-8.npz", "ckpt-8")  # a new checkpoint ...
    os.remove(f"{work}/checkpoints/1/ckpt-4.npz")  # ... and the pruned old one
    write(f"{work}/config.json", '{"changed": true}')
    write(f"{work}/iterations/0/summary.json", "summary-0")  # rewritten with the same content
    assert mirror.push() == ["checkpoints/1/ckpt-8.npz", "config.json"]
    tree = remote_tree(url)
    assert "checkpoints/1/ckpt-4.npz" not in tree
    assert tree["checkpoints/1/ckpt-8.npz"] == "ckpt-8" and tree["config.json"] == '{"changed": true}'


def test_mirror_pull_restores_a_run_directory_for_resume(gcs_emulator, tmp_path):
    url = f"gs://{gcs_emulator.bucket}/runs/r"
    make_run_dir(tmp_path / "first")
    gcs.DirectoryMirror(url, str(tmp_path / "first")).push()

    second = gcs.DirectoryMirror(url, str(tmp_path / "second"))
    pulled = second.pull()
    assert pulled[-1] == "iterations/0/architecture.json"  # pointer files arrive last on pull as well
    assert local_tree(tmp_path / "second") == remote_tree(url)
    assert second.pull() == []

    gcs.upload_bytes(b"newer", f"{url}/config.json")  # changed remotely: the remote copy wins
    assert second.pull() == ["config.json"]
    assert (tmp_path / "second" / "config.json").read_text() == "newer"
    assert second.push() == []


def test_fresh_mirror_reuploads_nothing_identical_and_never_deletes_what_it_did_not_sync(gcs_emulator, tmp_path):
    url = f"gs://{gcs_emulator.bucket}/runs/r"
    make_run_dir(tmp_path / "work")
    gcs.DirectoryMirror(url, str(tmp_path / "work")).push()
    before = remote_tree(url)
    # A new process on the same working copy: identical files are found by MD5 and not uploaded again.
    assert gcs.DirectoryMirror(url, str(tmp_path / "work")).push() == []
    # A mirror over an empty directory pushes nothing and deletes nothing.
    assert gcs.DirectoryMirror(url, str(tmp_path / "empty")).push() == []
    assert remote_tree(url) == before


def test_mirror_push_of_some_paths_touches_only_those(gcs_emulator, tmp_path):
    url = f"gs://{gcs_emulator.bucket}/runs/r"
    work = str(tmp_path / "work")
    make_run_dir(work)
    mirror = gcs.DirectoryMirror(url, work)
    assert mirror.push(["checkpoints"]) == ["checkpoints/1/ckpt-4.npz"]
    os.remove(f"{work}/checkpoints/1/ckpt-4.npz")
    write(f"{work}/checkpoints/1/ckpt-8.npz", "ckpt-8")
    assert mirror.push([os.path.join(work, "checkpoints", "1")]) == ["checkpoints/1/ckpt-8.npz"]
    assert sorted(remote_tree(url)) == ["checkpoints/1/ckpt-8.npz"]
    with pytest.raises(ValueError, match="outside"):
        mirror.push([str(tmp_path)])


def test_report_reads_a_gs_run_directory(gcs_emulator, capsys):
    import json

    from improve_nas import cli
    from improve_nas.report import build_report

    url = f"gs://{gcs_emulator.bucket}/runs/r"
    entry = {"iteration": 0, "members": ["m0"], "candidates": [{"name": "m0", "selection_loss": 1.0}],
             "chosen": "m0", "mixture_weights": [1.0], "ensemble": {"accuracy": 0.5, "loss": 1.25},
             "member_metrics": {"m0": {"accuracy": 0.5, "loss": 1.25}}, "trainable_params": 1234,
             "train_seconds": 2.0}
    report = build_report(dataset="fake", num_classes=10, iterations=[entry])
    gcs.upload_bytes(json.dumps(report).encode(), f"{url}/report.json")
    assert cli.main(["report", url, "--format=json"]) == 0
    assert json.loads(capsys.readouterr().out) == report
    assert cli.main(["report", url]) == 0
    assert "final: 1 members, test accuracy 0.5000" in capsys.readouterr().out
    assert cli.main(["report", f"gs://{gcs_emulator.bucket}/runs/none"]) == 2
    assert "no report.json in 'gs://b/runs/none'" in capsys.readouterr().err
