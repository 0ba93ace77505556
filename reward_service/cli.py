"""``reward-service``: one entry point, one module per subcommand.

Each subcommand module exposes ``add_arguments(parser)`` and ``run(args) -> int`` and imports
torch only inside ``run``, so ``serve`` and ``--help`` stay light.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "train": ("reward_service.train.cli", "train a reward model on human-feedback JSONL"),
    "export": ("reward_service.export.cli", "export a checkpoint to the ONNX model repository"),
    "serve": ("reward_service.serve.cli", "serve a model repository over HTTP"),
    "demo-data": ("reward_service.data.demo", "build the offline demo preference data"),
    "schemas": ("reward_service.schemas", "write proto/ (OpenAPI and JSON Schemas)"),
    "feedback": ("reward_service.feedback.cli", "collect human feedback: label, review, export"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reward-service", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        command.set_defaults(_module=module)
        importlib.import_module(module).add_arguments(command)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(importlib.import_module(args._module).run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
