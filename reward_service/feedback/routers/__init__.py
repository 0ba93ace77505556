"""The labeling app's two front doors onto :mod:`reward_service.feedback.labeling`."""
