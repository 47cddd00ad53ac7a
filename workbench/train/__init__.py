"""Training: recipes, method setup, data preparation and packing, the trainer, TRL objectives and export. Model
loading, templates and generation are `workbench.models`'s.

Importing this package is light; torch and transformers are imported inside the functions that need them.
"""
