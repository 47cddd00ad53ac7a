"""Training: recipes, base models, data templating, the trainer and adapter export.

Importing this package is light; torch and transformers are imported inside the functions that need them.
"""
