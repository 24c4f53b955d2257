"""Initialization of a model before contrastive training: the static fit (`static`), decoder LM / UL2
pretraining loops (`pretrain`) and the decoder -> encoder-decoder -> encoder adaptation (`adapt`)."""
