"""The `wb` commands, one module each: a command parses its options, calls one library function and prints.

`workbench.cli` (the app) only wires them; shared option types live in `options`, and every line a command
prints goes through `workbench.console`. Library work (defaults, cross-option checks, orchestration) belongs in
the library, so that a Python caller gets the same behaviour as the command line.
"""
