"""Governed exports (issue 17): recipients whose key possession is proven, export specs
approved by a second person, gated runs that minimise, check, encrypt and deliver with a
signed manifest, and the verification at the destination (``docs/exports.md``)."""
