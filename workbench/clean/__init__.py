"""Cleaning: rules (`rules`, `preference_rules`), PII handling (`pii`), profiles (`profile`), the SFT pipeline
(`pipeline`), preference data (`preference`), the Ray engine (`ray_engine`), and which of them runs a file
(`dispatch`: `run`, `run_file`, `resolve_kind`, `default_profile`). Import from those modules: this one imports
nothing, so that importing one of them does not run the others first (no circle through the package)."""
