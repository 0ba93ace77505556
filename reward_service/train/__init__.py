"""Reward-model training from human feedback (imports torch)."""
