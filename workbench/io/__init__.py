"""Reading input files, one module per concern (this package's `__init__` imports nothing):

- `streams`: opening a file or standard input, gzip/zstd decompression, UTF-16/32 transcoding, hashing while
  reading, byte ranges of a file for parallel readers;
- `formats`: the table formats (Parquet, Arrow, CSV), one entry each: magic bytes, loader, shard names; a new
  input format is one entry there;
- `sniff`: the format of an input told by its content (JSON Lines, JSON, or a table format), not its name;
- `reader`: the one reader of records (`RecordReader`, `read_records`, `read_objects`): every format, dataset
  folders and streams, with errors that name the file, the line (or item, or row) and the field;
- `csvrows`: CSV rows with the physical line each starts on, for headerless tables (multiple-choice files);
- `jsontext`: duplicate keys (which JSON parsers keep silently), deterministic JSON dumping;
- `options`: the command-line options about reading (`--map`, `--duplicate-keys`, default output names).

Writing outputs (atomic sets, locks, hashes) is `workbench.output`'s.
"""
