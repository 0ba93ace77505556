"""Fixtures of the deployment tests: the offline checkers and every kustomization, rendered.

The checkers live in their own venv (scripts/deploy_tools.sh): checkov pins packages that would
fight the project's dev venv. The script is idempotent, so the first test session on a fresh
machine pays the install (about a minute) and later ones pay nothing.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from deploy_paths import KUSTOMIZATIONS, ROOT, kustomization_id


@pytest.fixture(scope="session")
def tools() -> Path:
    script = ROOT / "scripts" / "deploy_tools.sh"
    result = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        pytest.fail(f"{script} failed:\n{result.stderr[-3000:]}")
    return ROOT / ".venv-tools" / "bin"


@pytest.fixture(scope="session")
def rendered(tools: Path) -> dict[str, str]:
    """``kubectl kustomize`` output of every kustomization under k8s/, by folder."""
    out: dict[str, str] = {}
    for folder in KUSTOMIZATIONS:
        result = subprocess.run(
            [str(tools / "kubectl"), "kustomize", str(folder)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, f"kustomize {folder}: {result.stderr}"
        out[kustomization_id(folder)] = result.stdout
    return out


@pytest.fixture(scope="session")
def objects(rendered: dict[str, str]) -> dict[str, list[dict]]:
    return {name: [d for d in yaml.safe_load_all(text) if d] for name, text in rendered.items()}
