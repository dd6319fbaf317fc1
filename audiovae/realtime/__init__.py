"""Realtime use: export for hosts without audiovae (TorchScript, ONNX, nn~) and a simulated live host."""
