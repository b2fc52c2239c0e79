"""Artifact formats: readers of backup files and record codecs (L2)."""
