"""Data building for training: pair datasets (`pairs`), mixtures and the batch sampler (`mixture`), the
training sets converted from the shared data (`sources`), the text corpus (`corpus`), tokenizer training
(`tokenizer`), the teacher and its embedding cache (`teacher`) and hard-negative mining (`mining`)."""
