"""Models: everything that loads a model or runs it, shared by training, evaluation, scoring, augmentation,
generation and chat (floor 2: it imports records/io/text only, and nothing from `train/`, `evaluate/` or `score/`).

- `base`: resolving a model spec (the embedded SmolLM2, local folders, cached hub snapshots) and loading base
  models, tokenizers and PEFT adapters; the tiny test model;
- `folders`: where wb's cache, converted models and the Hugging Face cache live; publishing a model folder atomically;
- `embedded`: the embedded SmolLM2 (its GGUF file, converted to safetensors once);
- `weights`: the one safetensors check for base models, adapters and checkpoints;
- `stack`: importing torch and transformers (offline, quiet, one-line error when missing);
- `listing`: the models usable without a network (`wb models`);
- `adapters`: wb's bottleneck adapters (definition, save, load);
- `targets`: what a command is pointed at (a run, an adapter folder, a base model) and loading it for generation;
- `templates`: chat/Alpaca templates, prompts and tokenised examples (prompt tokens masked);
- `generate`: batched generation and reference losses, with the generation cache;
- `loglik`: log-likelihoods of continuations (multiple choice, preference accuracy), with their cache;
- `losses`: per-example losses;
- `cache`: the one SQLite scaffold the generation, log-likelihood and score caches share.

Importing this package is light; torch and transformers are imported inside the functions that need them.
"""
