"""The ``triage`` command line: one entry point that drives every stage."""
