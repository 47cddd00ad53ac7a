"""Models: everything that loads a model or runs it, shared by training, evaluation, scoring, augmentation,
generation and chat (floor 2: it imports records/io/text only, and nothing from `train/`, `evaluate/` or `score/`).

- `base`: base models (the embedded SmolLM2, local folders, cached hub snapshots), the one safetensors check for
  weights and adapters, tokenizers, the tiny test model;
- `adapters`: wb's bottleneck adapters (definition, save, load);
- `targets`: what a command is pointed at (a run, an adapter folder, a base model) and loading it for generation;
- `templates`: chat/Alpaca templates, prompts and tokenised examples (prompt tokens masked);
- `generate`: batched generation and reference losses, with the generation cache;
- `loglik`: log-likelihoods of continuations (multiple choice, preference accuracy), with their cache;
- `losses`: per-example losses;
- `cache`: the one SQLite scaffold the generation, log-likelihood and score caches share.

Importing this package is light; torch and transformers are imported inside the functions that need them.
"""
