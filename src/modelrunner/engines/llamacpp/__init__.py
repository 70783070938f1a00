"""modelrunner's llama.cpp engine: one model, one context, continuous batching.

Built on llama-cpp-python's low-level C API. The parts, in the order a request meets them:

- ``server``: HTTP (threads, keep-alive, cancellation when the client leaves);
- ``engine``: request body -> prompt tokens (``chat_template``) and settings (``params``)
  -> a ``jobs.Job`` with its own sampler chain (``sampling``);
- ``scheduler``: the one thread that batches every slot into one ``llama_decode`` per step,
  deciding with the pure functions of ``slots`` and cutting text with ``detokenize`` and
  ``stops``;
- ``answers``: generated text -> OpenAI's answer and stream shapes;
- ``embeddings``, ``metrics``, and ``model`` (the thin wrappers over llama_cpp).
"""
