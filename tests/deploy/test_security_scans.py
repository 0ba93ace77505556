"""The Dockerfile lints clean with hadolint, and checkov finds nothing in it or in any rendered
manifest that is not waived in place (a ``# checkov:skip`` comment or a ``checkov.io/skip``
annotation) with a reason. Both tools run offline (``--skip-download``: checkov would otherwise
call its vendor's API for guideline links).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from deploy_paths import ROOT

CANARY = "canary"


@pytest.fixture(scope="module")
def checkov(
    tools: Path, rendered: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, dict]:
    """One checkov run (it takes seconds to start) over the Dockerfile, every rendered
    kustomization, and a canary pod that must fail: reports by framework."""
    folder = tmp_path_factory.mktemp("scan")
    shutil.copy(ROOT / "Dockerfile", folder / "Dockerfile")
    for name, text in rendered.items():
        (folder / (name.replace("/", "-") + ".yaml")).write_text(text)
    (folder / CANARY).mkdir()
    (folder / CANARY / "pod.yaml").write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n"
        "spec: {containers: [{name: c, image: 'x:latest', securityContext: {privileged: true}}]}\n"
    )
    result = subprocess.run(
        [
            str(tools / "checkov"),
            *("--directory", str(folder), "--framework", "kubernetes", "dockerfile"),
            *("--skip-download", "--output", "json"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.stdout.strip(), result.stderr[-3000:]
    reports = json.loads(result.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    by_type = {r["check_type"]: r["results"] for r in reports}
    by_type["files"] = {"scanned": sorted(p.name for p in folder.iterdir() if p.is_file())}
    return by_type


def is_canary(check: dict) -> bool:
    return check["file_path"].startswith(f"/{CANARY}/")


def assert_clean(results: dict) -> None:
    failed = [
        f"{c['check_id']} {c['resource']} ({c['file_path']})"
        for c in results["failed_checks"]
        if not is_canary(c)
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


def test_checkov_dockerfile(checkov: dict[str, dict]) -> None:
    assert_clean(checkov["dockerfile"])


def test_checkov_rendered_manifests(checkov: dict[str, dict]) -> None:
    results = checkov["kubernetes"]
    assert_clean(results)
    scanned = {c["file_path"].lstrip("/") for c in results["passed_checks"]}
    manifests = {name for name in checkov["files"]["scanned"] if name.endswith(".yaml")}
    assert manifests <= scanned


def test_checkov_can_fail(checkov: dict[str, dict]) -> None:
    failed = {c["check_id"] for c in checkov["kubernetes"]["failed_checks"] if is_canary(c)}
    assert "CKV_K8S_16" in failed
