"""ONNX export with a parity gate (imports torch)."""
