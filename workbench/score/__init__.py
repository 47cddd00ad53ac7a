"""`wb score`: model-based quality scores per record (answer perplexity with and without the prompt, the
instruction-following difficulty IFD, prompt perplexity, a reward model's score). The table of scores by line that
clean rules read is `workbench.clean.scores`.

`summary` imports no deep-learning stack (the report and the stats page use it); `lm`, `reward` and `pipeline`
import torch and transformers inside their functions.
"""
