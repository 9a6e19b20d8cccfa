"""Recipes: one LightningModule per method and objective, with its DataModule.

Modules here register their recipes with :func:`videolang.engine.register_recipe` when
imported; the engine imports ``videolang.recipes.<method>`` for a recipe named
``<method>.<objective>``.
"""
