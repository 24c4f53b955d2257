"""Export of the whole embedding pipeline to other runtimes: `gemma_embed.export.onnx` (ONNX Runtime) and
`gemma_embed.export.gguf` (llama.cpp / Ollama); `gemma_embed.export.cli` registers `gemma-embed export`."""
