"""Read a local text corpus: Debian's ``fortunes`` (entries split by ``%``) or plain files.

The demo has no internet, so both the policy's pretraining text and the reward model's
preference data come from here. Imports no torch.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

FORTUNES_DIR = Path("/usr/share/games/fortunes")
SKIP_SUFFIXES = (".dat", ".u8")
SKIP_NAMES = {"art", "ascii-art"}
_SPACE = re.compile(r"\s+")


class CorpusError(FileNotFoundError):
    pass


def corpus_files(path: Path) -> list[Path]:
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise CorpusError(
            f"corpus {path} not found; on Debian/Ubuntu run `apt-get install -y fortunes`, "
            "or pass --corpus with any folder of text files"
        )
    files = [
        p
        for p in sorted(path.iterdir())
        if p.is_file() and p.suffix not in SKIP_SUFFIXES and p.name not in SKIP_NAMES
    ]
    if not files:
        raise CorpusError(f"corpus {path} holds no text files")
    return files


def read_entries(path: Path = FORTUNES_DIR, min_chars: int = 20, max_chars: int = 600) -> list[str]:
    """Entries of ``min_chars``..``max_chars`` characters, whitespace collapsed, in file order."""
    entries = []
    for file in corpus_files(path):
        text = file.read_text(encoding="utf-8", errors="replace")
        for raw in re.split(r"^%\s*$", text, flags=re.MULTILINE):
            entry = _SPACE.sub(" ", raw).strip()
            if min_chars <= len(entry) <= max_chars:
                entries.append(entry)
    return entries


def split_entries(entries: list[str], held_out: float, seed: int) -> tuple[list[str], list[str]]:
    """A seeded split, so the policy and the reward model never see the held-out prompts."""
    shuffled = entries[:]
    random.Random(seed).shuffle(shuffled)
    n_held = int(len(shuffled) * held_out)
    return shuffled[n_held:], shuffled[:n_held]
