"""Training, by job: `data` (datasets, corpus, tokenizer, teacher, mining), `init` (static fit, LM and UL2
pretraining, adaptation), the trainer (`recipe`, `trainer`, `state`, `parallel`, `cli`) and `orchestration`
(pipeline, ablation, mixture search, soup, curves)."""
