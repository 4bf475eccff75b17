"""Model training, evaluation against baselines and the oracle, fairness audit, registry."""
