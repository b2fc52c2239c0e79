"""Content fingerprints: order- and format-independent digests of a dataset's records,
mergeable across partitions and diffable down to the key (L3)."""
