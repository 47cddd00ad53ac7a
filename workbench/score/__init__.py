"""`wb score`: model-based quality scores per record (answer perplexity with and without the prompt, the
instruction-following difficulty IFD, prompt perplexity, a reward model's score), and the score table that clean
rules read.

`summary` and `table` import no deep-learning stack (clean and report use them); `lm`, `reward` and `pipeline`
import torch and transformers inside their functions.
"""
