"""Our own small models: the toy language and tokenizer, the training corpus and recipes, the model
card, and the hand-built ground-truth model."""
