"""Runs made of training runs: the pipeline of stages (`pipeline`), ablations (`ablation`), mixture search
(`mixture_search`, `mixture_cli`), checkpoint souping (`soup`) and training curves (`curves`)."""
