"""Evaluation: metrics by registry name (FID, KID, IS, precision/recall, class and mode coverage),
the feature extractors they run on, and the real data's reference statistics."""
