"""Inference stays light: loading and using a model folder never imports the training stack."""

from __future__ import annotations

import subprocess
import sys


def test_pipelines_do_not_import_lightning_or_the_recipes():
    code = ("import sys, videolang.pipelines as p, videolang.pipelines.convert, videolang.cli.predict\n"
            "for f in p.FAMILIES: p.pipeline_class(f)\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning')\n"
            "       or m.startswith(('videolang.recipes', 'videolang.engine'))]\n"
            "sys.exit(f'imported {bad[:5]}' if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr + done.stdout
