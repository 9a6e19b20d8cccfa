"""videolang: video-and-language learning on one data layer, one model library and one engine.

The library (``videolang.data``, ``videolang.metrics``, ...) imports without the training
stack; the trainer and the CLI sit on top.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
