"""Models: shared blocks (``layers``, ``bert``), one modelling file per method, the registry.

``list_models()`` / ``create_model(name)`` / ``load_pretrained(dir)`` / ``save_pretrained``
come from :mod:`videolang.models.registry`.
"""

from videolang.models.registry import create_model, list_models, load_pretrained, save_pretrained

__all__ = ["create_model", "list_models", "load_pretrained", "save_pretrained"]
