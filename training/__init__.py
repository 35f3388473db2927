"""R-Adapter training tool chain for open_clip: adapters, losses, merge and ONNX export."""
