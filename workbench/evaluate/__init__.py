"""`wb eval`: generation, text-overlap metrics, forgetting probes, base-vs-tuned comparison with bootstrap intervals."""
