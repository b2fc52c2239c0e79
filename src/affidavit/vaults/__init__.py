"""vaults."""
