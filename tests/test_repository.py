import json
import shutil

import pytest

from reward_service.repository import (
    ModelLoadError,
    check_name,
    discover,
    load_manifest,
    next_version,
    verify,
)
from reward_service.scorer import LoadedModel


@pytest.fixture
def repo_copy(tiny_model_repo, tmp_path):
    shutil.copytree(tiny_model_repo, tmp_path / "repo")
    return tmp_path / "repo"


def test_discover_and_next_version(repo_copy):
    assert [p.relative_to(repo_copy).as_posix() for p in discover(repo_copy)] == ["tiny/1"]
    assert next_version(repo_copy, "tiny") == 2
    assert next_version(repo_copy, "new") == 1


@pytest.mark.parametrize("name", ["../etc", "a/b", ".hidden", "", "x" * 65, "a b"])
def test_names_never_become_paths(name):
    with pytest.raises(ValueError, match="invalid model name"):
        check_name(name)


def test_sha_mismatch_is_refused(repo_copy):
    folder = repo_copy / "tiny" / "1"
    with (folder / "model.onnx").open("ab") as fh:
        fh.write(b"\0")
    with pytest.raises(ModelLoadError, match="does not match the manifest"):
        verify(folder, load_manifest(folder))
    with pytest.raises(ModelLoadError, match="sha256"):
        LoadedModel.open(folder)


def test_broken_manifest_and_missing_files(repo_copy):
    folder = repo_copy / "tiny" / "1"
    (folder / "tokenizer.json").unlink()
    with pytest.raises(ModelLoadError, match=r"tokenizer\.json is missing"):
        load_manifest(folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    del manifest["sha256"]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelLoadError, match="not a valid manifest"):
        load_manifest(folder)
    (folder / "manifest.json").unlink()
    with pytest.raises(ModelLoadError, match=r"no manifest\.json"):
        load_manifest(folder)


def test_missing_repository(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        discover(tmp_path / "absent")
