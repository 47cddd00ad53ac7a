"""Reading input files, one module per concern (this package's `__init__` imports nothing):

- `streams`: opening a file or standard input, gzip/zstd decompression, UTF-16/32 transcoding, hashing while
  reading, byte ranges of a file for parallel readers;
- `sniff`: the format of an input told by its content (JSON Lines, JSON, Parquet, Arrow, CSV), not its name;
- `reader`: the one reader of records (`RecordReader`, `read_records`, `read_objects`): every format, dataset
  folders and streams, with errors that name the file, the line (or item, or row) and the field;
- `csvrows`: CSV rows with the physical line each starts on, for headerless tables (multiple-choice files);
- `jsontext`: duplicate keys, deterministic JSON dumping, small JSON Lines files;
- `options`: the command-line options about reading (`--map`, `--duplicate-keys`, default output names).

Writing outputs (atomic sets, locks, hashes) is `workbench.output`'s.
"""
