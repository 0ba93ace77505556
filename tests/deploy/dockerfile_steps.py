"""Just enough of a Dockerfile reader to replay one stage's steps outside Docker.

No container engine runs on our CI machines, so the install-step test executes the Dockerfile's
own RUN lines (never a copy of them) in a clean venv. This reads instructions with their line
continuations, stages, build arguments and JSON (exec) forms.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

FROM_PATTERN = re.compile(r"^(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?$", re.IGNORECASE)


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str
    line: int

    def exec_form(self) -> list[str] | None:
        """The argument list of a JSON-form instruction, None for shell form."""
        text = self.arguments
        if self.keyword == "HEALTHCHECK":
            text = text.partition("CMD")[2]
        try:
            value = json.loads(text.strip())
        except json.JSONDecodeError:
            return None
        return value if isinstance(value, list) else None


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


@dataclass
class Dockerfile:
    global_args: dict[str, str]
    stages: list[Stage]

    def stage(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(f"Dockerfile has no stage {name!r}")

    def build_args(self, stage: Stage, overrides: dict[str, str]) -> dict[str, str]:
        """ARG values visible to a stage's RUN lines: declared defaults, then --build-arg."""
        values: dict[str, str] = {}
        for instruction in stage.all("ARG"):
            name, _, default = instruction.arguments.partition("=")
            values[name] = default if default else self.global_args.get(name, "")
        values.update({k: v for k, v in overrides.items() if k in values})
        return values


def logical_lines(text: str) -> list[tuple[int, str]]:
    """(first line number, instruction text): continuations joined, comment lines dropped."""
    lines: list[tuple[int, str]] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].strip())
            continue
        pending.append(stripped)
        lines.append((start, " ".join(pending)))
        pending = []
    return lines


def parse(text: str) -> Dockerfile:
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for number, line in logical_lines(text):
        keyword, _, arguments = line.partition(" ")
        keyword, arguments = keyword.upper(), arguments.strip()
        if keyword == "FROM":
            match = FROM_PATTERN.match(arguments)
            if match is None:
                raise ValueError(f"line {number}: unreadable FROM {arguments!r}")
            stages.append(Stage(name=match[2] or str(len(stages)), base=match[1]))
        elif not stages:
            if keyword == "ARG":
                name, _, default = arguments.partition("=")
                global_args[name] = default
        else:
            stages[-1].instructions.append(Instruction(keyword, arguments, number))
    return Dockerfile(global_args, stages)


def read(path: Path) -> Dockerfile:
    return parse(path.read_text())
