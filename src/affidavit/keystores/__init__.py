"""Key-encryption-key (KEK) stores: wrap and unwrap per-backup identities (L2)."""
