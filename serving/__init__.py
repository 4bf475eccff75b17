"""Batch scoring with SHAP explanations, the BentoML service and reviewer pages.

Imports ``features`` and loads what training saved; never imports ``training``.
"""
