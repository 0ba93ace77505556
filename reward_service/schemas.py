"""``reward-service schemas``: write the API contract in proto/ from the code itself.

proto/openapi.json comes from the FastAPI app, proto/schemas/*.schema.json from the pydantic
models of the manifest and the preference-data formats. Output is sorted, indented JSON so a
diff shows only real changes; ``--check`` exits 1 when proto/ differs from the code (the test
suite runs it, so the contract cannot drift silently).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from reward_service.data.formats import json_schemas
from reward_service.repository import Manifest


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("proto"), help="output folder")
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if the folder is out of date"
    )


def dumps(document: dict) -> str:
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def openapi() -> dict:
    """The served app's OpenAPI document, built without loading any model."""
    from reward_service.serve.main import create_app
    from reward_service.serve.registry import Registry
    from reward_service.serve.settings import Settings
    from reward_service.serve.state import Service

    return create_app(Service(settings=Settings(), registry=Registry([], None))).openapi()


def documents() -> dict[str, str]:
    """Relative path → file text for everything under proto/."""
    files = {"openapi.json": dumps(openapi())}
    files["schemas/manifest.schema.json"] = dumps(Manifest.model_json_schema())
    for name, schema in json_schemas().items():
        files[f"schemas/{name}"] = dumps(schema)
    return files


def stale(out: Path) -> list[str]:
    return [
        rel
        for rel, text in documents().items()
        if not (out / rel).is_file() or (out / rel).read_text() != text
    ]


def run(args: argparse.Namespace) -> int:
    if args.check:
        outdated = stale(args.out)
        for rel in outdated:
            print(f"{args.out / rel} is out of date; run `reward-service schemas`", file=sys.stderr)
        return 1 if outdated else 0
    for rel, text in documents().items():
        path = args.out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path}")
    return 0
