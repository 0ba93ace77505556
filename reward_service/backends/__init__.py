"""Inference runtimes behind one small interface; the batcher and routes never see which runs.

The serving path imports no torch: every backend here takes numpy int64 feeds and returns one
float32 score per row.
"""

from reward_service.backends.base import Backend, BackendError, load_backend

__all__ = ["Backend", "BackendError", "load_backend"]
