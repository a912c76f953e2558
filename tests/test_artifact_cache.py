"""The sandbox's artifact cache (releaser/sandbox/artifact_cache.py): the LXC hosts' image
and the dev boxes' box are built once per set of inputs, never left half written, and
an artifact of other inputs is removed once its successor is complete."""

from __future__ import annotations

from pathlib import Path

import pytest

from releaser.errors import SandboxError
from releaser.sandbox.artifact_cache import digest, ensure, run, unpack


def test_the_key_is_a_digest_of_the_inputs_in_any_order():
    assert digest({"a": 1, "b": [1, 2]}) == digest({"b": [1, 2], "a": 1})
    assert digest({"a": 1}) != digest({"a": 2})
    assert len(digest({"a": 1})) == 16


def test_built_once_then_cached_and_older_ones_removed(tmp_path):
    builds: list[Path] = []

    def build(work: Path, partial: Path) -> None:
        assert work.is_dir() and work.parent == tmp_path
        builds.append(partial)
        partial.write_text(f"built {len(builds)}\n")

    said: list[str] = []
    first = ensure(tmp_path, "thing", "aaaa", ".tar", build, said.append, label="the thing")
    assert first == tmp_path / "thing-aaaa.tar" and first.read_text() == "built 1\n"
    assert builds == [tmp_path / "thing-aaaa.tar.partial"]
    assert said[-1].startswith(f"the thing: built {first} in ")
    assert ensure(tmp_path, "thing", "aaaa", ".tar", build, said.append) == first
    assert len(builds) == 1 and said[-1] == f"thing: cached {first}"

    (tmp_path / "other-cccc.tar").write_text("another artifact's\n")
    second = ensure(tmp_path, "thing", "bbbb", ".tar", build)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other-cccc.tar", "thing-bbbb.tar"]
    assert second.read_text() == "built 2\n"


def test_a_failed_build_leaves_nothing_and_keeps_the_previous_artifact(tmp_path):
    kept = ensure(tmp_path, "thing", "aaaa", ".tar", lambda _w, p: p.write_text("good\n"))

    def fails(work: Path, partial: Path) -> None:
        partial.write_text("half")
        (work / "scratch").write_text("x")
        run(["false"], "the build step")

    with pytest.raises(SandboxError, match="^the build step exited 1"):
        ensure(tmp_path, "thing", "bbbb", ".tar", fails)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thing-aaaa.tar"]
    assert kept.read_text() == "good\n"


def test_unpack_makes_a_new_folder_of_the_tarball_and_refuses_an_existing_one(tmp_path):
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "hostname").write_text("host\n")
    tarball = tmp_path / "tree.tar"
    run(["tar", "--numeric-owner", "-C", str(tree), "-cf", str(tarball), "."], "tar")
    unpack(tarball, tmp_path / "root")
    assert (tmp_path / "root" / "etc" / "hostname").read_text() == "host\n"
    with pytest.raises(FileExistsError):
        unpack(tarball, tmp_path / "root")
