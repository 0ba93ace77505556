"""Human-feedback collection: the labeling app, its database, export to training data.

A wing of its own: it reaches the reward service only over HTTP (for active selection), as a
trainer does, and the serving path never imports it.
"""
