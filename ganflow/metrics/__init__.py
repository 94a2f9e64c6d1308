"""Evaluation metrics and feature extractors."""
