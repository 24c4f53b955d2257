"""Training: data, the trainer, distributed helpers, souping and mixture search."""
