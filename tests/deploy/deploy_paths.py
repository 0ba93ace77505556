"""Where the deployment files live; a module of its own so test files can import it by name."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
KUSTOMIZATIONS = sorted(p.parent for p in K8S.rglob("kustomization.yaml"))


def kustomization_id(folder: Path) -> str:
    return folder.relative_to(K8S).as_posix()
