"""wb: a workbench for fine-tuning data."""

__version__ = "0.1.0"
