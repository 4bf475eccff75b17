"""Synthetic world, ingestion, entity resolution and per-case features.

This package knows nothing of ``training`` or ``serving``; both import it.
"""
