"""HTTP serving: OpenAI-compatible `/v1/embeddings`, TEI-compatible `/embed`, health, models and metrics.

`gemma-embed serve --model DIR` (see `serve.cli`) runs the app of `serve.app.create_app` under uvicorn.
Concurrent requests are merged into token-budgeted batches by `serve.batcher.Batcher`, whose single worker
thread owns the model. FastAPI and uvicorn are imported only by the modules that need them, never by
`import gemma_embed` or by registering the subcommand. See docs/serving.md.
"""
