"""Cleaning: rules (the registry `rule_registry`; `rules`, `score_rules`, `preference_rules`), PII handling
(`pii`), profiles (`profile`), the steps on a frame (`pipeline`), the record shapes (`sft`; `preference` for pairs
and KTO examples; `shapes` picks one), the one driver that runs a shape locally (`driver`, with the accounting and
output set in `output`), the Ray engine (`ray_engine`, `ray_blocks`), and which of them runs a file (`dispatch`:
`run`, `run_file`, `resolve_kind`, `default_profile`). Import from those modules: this one imports nothing, so that
importing one of them does not run the others first (no circle through the package)."""
