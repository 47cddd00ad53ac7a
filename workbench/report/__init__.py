"""Reporting and gating: `summary` loads a run folder, `gate` checks thresholds, `check` gates a run folder, `junit`
writes JUnit XML, `html` and `markdown` write the report. None of it imports torch or transformers."""
