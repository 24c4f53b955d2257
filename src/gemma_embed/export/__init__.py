"""Export of the whole embedding pipeline to other runtimes: `gemma_embed.export.onnx` (ONNX Runtime)."""
