"""Converters from the original checkpoints to our state dicts, one module per family.

Each module has a ``CONVERTER`` (default model, loader, description) used by
``videolang convert FAMILY`` (:mod:`videolang.pipelines.convert`); every loader reads nothing
itself and loads strictly (:func:`videolang.models.weights.load_strict`).
"""
