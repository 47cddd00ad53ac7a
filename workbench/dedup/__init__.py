"""Deduplication and decontamination stages of `wb clean` (and `wb dedup`): exact duplicates, MinHash
near-duplicates, and n-gram overlap with evaluation sets."""
