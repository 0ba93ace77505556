"""The shared, serving-side modules and the CLI parser must not drag in torch or transformers."""

import subprocess
import sys

LIGHT = [
    "reward_service.template",
    "reward_service.repository",
    "reward_service.scorer",
    "reward_service.backends",
    "reward_service.stats",
    "reward_service.checkpoint",
    "reward_service.data.formats",
    "reward_service.data.corpus",
    "reward_service.train.cli",
    "reward_service.export.cli",
    "reward_service.data.demo",
]


def test_light_modules_import_without_torch():
    code = (
        "import importlib, sys\n"
        f"for m in {LIGHT!r}: importlib.import_module(m)\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers'))\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
