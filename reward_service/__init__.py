"""RLHF reward models: train from human feedback, export to ONNX, serve over HTTP."""

__version__ = "0.1.0"
