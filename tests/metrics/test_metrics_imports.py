"""The metrics stand alone: importing every metrics module loads no data, model or Lightning
code, directly or through another module (tests/test_architecture.py checks the source)."""

from __future__ import annotations

import subprocess
import sys

MODULES = ("anticipation", "captioning", "classification", "glue", "knn", "retrieval")


def test_importing_the_metrics_loads_no_data_models_or_lightning():
    imports = "; ".join(f"import videolang.metrics.{m}" for m in MODULES)
    probe = f"import sys; {imports}; print(' '.join(sorted(sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True).stdout.split()
    assert "videolang.metrics.glue" in loaded  # the probe imported what it names
    wrong = [m for m in loaded if m.startswith(("videolang.data", "videolang.models", "lightning",
                                                "pytorch_lightning"))]
    assert not wrong, wrong
