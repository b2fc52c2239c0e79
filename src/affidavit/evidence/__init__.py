"""The evidence package: its content model, layout, OSCAL and HTML renderings, and the
offline verifier (layer 3: pure functions over bytes, no catalog)."""
