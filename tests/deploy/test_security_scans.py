"""The Dockerfile lints clean with hadolint, and checkov finds nothing in it or in any rendered
manifest that is not waived in place (a ``# checkov:skip`` comment or a ``checkov.io/skip``
annotation) with a reason. Both tools run offline (``--skip-download``: checkov would otherwise
call its vendor's API for guideline links).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT


def checkov(tools: Path, *args: str) -> dict:
    result = subprocess.run(
        [str(tools / "checkov"), *args, "--skip-download", "--output", "json"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert result.stdout.strip(), result.stderr[-3000:]
    report = json.loads(result.stdout)
    return report[0] if isinstance(report, list) else report


def assert_clean(report: dict) -> None:
    results = report["results"]
    failed = [
        f"{c['check_id']} {c['resource']} ({c['file_path']})" for c in results["failed_checks"]
    ]
    assert not failed, "checkov failures:\n" + "\n".join(failed)
    assert not results["parsing_errors"]
    assert results["passed_checks"], "checkov checked nothing"
    for skipped in results["skipped_checks"]:
        reason = (skipped["check_result"].get("suppress_comment") or "").strip()
        assert len(reason) > 10, f"{skipped['check_id']} waived without a reason"


def test_hadolint_passes(tools: Path) -> None:
    result = subprocess.run(
        [str(tools / "hadolint"), "--failure-threshold", "info", str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_can_fail(tools: Path, tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian:latest\nRUN apt-get install curl\n")
    result = subprocess.run([str(tools / "hadolint"), str(bad)], capture_output=True, text=True)
    assert result.returncode != 0 and "DL3007" in result.stdout


def test_checkov_dockerfile(tools: Path) -> None:
    assert_clean(checkov(tools, "--file", str(ROOT / "Dockerfile"), "--framework", "dockerfile"))


@pytest.fixture(scope="module")
def rendered_dir(rendered: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("rendered")
    for name, text in rendered.items():
        (folder / (name.replace("/", "-") + ".yaml")).write_text(text)
    return folder


def test_checkov_rendered_manifests(tools: Path, rendered_dir: Path) -> None:
    report = checkov(tools, "--directory", str(rendered_dir), "--framework", "kubernetes")
    assert_clean(report)
    scanned = {Path(c["file_path"]).name for c in report["results"]["passed_checks"]}
    assert len(scanned) == len(list(rendered_dir.iterdir()))


def test_checkov_can_fail(tools: Path, tmp_path: Path) -> None:
    (tmp_path / "pod.yaml").write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n"
        "spec: {containers: [{name: c, image: 'x:latest', securityContext: {privileged: true}}]}\n"
    )
    report = checkov(tools, "--directory", str(tmp_path), "--framework", "kubernetes")
    assert {c["check_id"] for c in report["results"]["failed_checks"]} >= {"CKV_K8S_16"}
