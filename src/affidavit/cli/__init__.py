"""The command-line interface (L5): one module per command group, all calling services."""
