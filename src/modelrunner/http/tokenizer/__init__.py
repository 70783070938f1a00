"""tokenizer: vLLM's /tokenize and /detokenize for every model that has a tokenizer."""
