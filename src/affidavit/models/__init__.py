"""Frozen value types shared by every layer (L1)."""
