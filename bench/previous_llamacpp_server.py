"""The PREVIOUS llama.cpp engine (a Pool of ``Llama`` contexts, no batching), kept only so
bench_llamacpp_engine.py can run it side by side with the current one. Not product code.

OpenAI routes over llama-cpp-python's ``Llama``: chat completions (the GGUF's own chat
template), completions, embeddings (only with ``--embedding``), streaming. It keeps
``--parallel`` contexts of the model (the weights are memory-mapped, so they are shared):
each request takes a free context or waits for one, so concurrent requests all complete
instead of cancelling each other. Threads, not an event loop: llama.cpp releases the GIL
while it computes, and ``/health`` answers while a request generates.
"""

from __future__ import annotations

import argparse
import os
import queue
import sys
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Final

from modelrunner.engines.serving import RequestError, Route, model_list, parse_bool, serve

# Request fields handed to llama-cpp-python as they are; everything else is ignored.
SAMPLING: Final = (
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "typical_p",
    "stop",
    "seed",
    "max_tokens",
    "presence_penalty",
    "frequency_penalty",
    "repeat_penalty",
    "logit_bias",
)
CHAT_ONLY: Final = ("response_format", "tools", "tool_choice", "logprobs", "top_logprobs")
COMPLETION_ONLY: Final = ("suffix", "echo", "logprobs")


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="llamacpp_server", description=__doc__)
    p.add_argument("--model", required=True, help="the .gguf file")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--served-name", default=None, help="the model id /v1/models reports")
    p.add_argument("--n_ctx", type=int, default=4096)
    p.add_argument("--n_threads", type=int, default=None)
    p.add_argument("--parallel", type=int, default=1, help="contexts, i.e. requests at once")
    p.add_argument("--n_gpu_layers", type=int, default=0)
    p.add_argument("--embedding", action="store_true", help="serve /v1/embeddings too")
    p.add_argument("--chat-template-file", default=None)
    # The allow-listed runtime_flags (engines/flags.py), spelled as llama-cpp-python's server.
    p.add_argument("--n_batch", type=int, default=512)
    p.add_argument("--n_ubatch", type=int, default=512)
    p.add_argument("--flash_attn", type=parse_bool, default=False)
    p.add_argument("--rope_freq_base", type=float, default=0.0)
    p.add_argument("--rope_freq_scale", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0xFFFFFFFF)
    p.add_argument("--use_mmap", type=parse_bool, default=True)
    p.add_argument("--use_mlock", type=parse_bool, default=False)
    p.add_argument("--type_k", type=int, default=None)
    p.add_argument("--type_v", type=int, default=None)
    p.add_argument("--chat_format", default=None)
    p.add_argument("--cache", type=parse_bool, default=False)
    p.add_argument("--cache_size", type=int, default=2 << 30)
    p.add_argument("--logits_all", type=parse_bool, default=False)
    p.add_argument("--verbose", type=parse_bool, default=False)
    return p.parse_args(argv)


def default_threads(parallel: int) -> int:
    """Share the cores between the contexts, so parallel requests don't oversubscribe them."""
    return max(1, (os.cpu_count() or 1) // max(1, parallel))


def load(args: argparse.Namespace, embedding: bool) -> Any:
    from llama_cpp import Llama

    llama = Llama(
        model_path=args.model,
        n_ctx=args.n_ctx,
        n_threads=args.n_threads or default_threads(args.parallel),
        n_gpu_layers=args.n_gpu_layers,
        n_batch=args.n_batch,
        n_ubatch=args.n_ubatch,
        flash_attn=args.flash_attn,
        rope_freq_base=args.rope_freq_base,
        rope_freq_scale=args.rope_freq_scale,
        seed=args.seed,
        use_mmap=args.use_mmap,
        use_mlock=args.use_mlock,
        type_k=args.type_k,
        type_v=args.type_v,
        chat_format=args.chat_format,
        logits_all=args.logits_all,
        embedding=embedding,
        verbose=args.verbose,
    )
    if args.chat_template_file and not embedding:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        with open(args.chat_template_file, encoding="utf-8") as f:
            template = f.read()

        def text(token: int) -> str:
            return str(llama.detokenize([token], special=True).decode())

        formatter = Jinja2ChatFormatter(
            template, eos_token=text(llama.token_eos()), bos_token=text(llama.token_bos())
        )
        llama.chat_handler = formatter.to_chat_handler()
    if args.cache and not embedding:
        from llama_cpp.llama_cache import LlamaRAMCache

        llama.set_cache(LlamaRAMCache(capacity_bytes=args.cache_size))
    return llama


class Pool:
    """Contexts of one model; a request holds one for as long as it generates."""

    def __init__(self, contexts: Sequence[Any]) -> None:
        self._free: queue.Queue[Any] = queue.Queue()
        for context in contexts:
            self._free.put(context)

    @contextmanager
    def context(self) -> Iterator[Any]:
        llama = self._free.get()
        try:
            yield llama
        finally:
            self._free.put(llama)


def mean_pooled(embedding: list[Any]) -> list[float]:
    """One vector per input: a model without a pooling type of its own (a chat model)
    yields one vector per token, which OpenAI clients cannot use."""
    if not embedding or not isinstance(embedding[0], list):
        return embedding
    width = len(embedding[0])
    return [sum(row[i] for row in embedding) / len(embedding) for i in range(width)]


# The types OpenAI documents for the numeric sampling fields; anything else is the client's
# mistake (400), not an engine failure (500).
_NUMBER: Final = (int, float)
_FIELD_TYPES: Final[dict[str, tuple[type, ...]]] = {
    "temperature": _NUMBER,
    "top_p": _NUMBER,
    "min_p": _NUMBER,
    "typical_p": _NUMBER,
    "presence_penalty": _NUMBER,
    "frequency_penalty": _NUMBER,
    "repeat_penalty": _NUMBER,
    "top_k": (int,),
    "seed": (int,),
    "max_tokens": (int,),
}


def _pick(body: dict[str, Any], names: Sequence[str]) -> dict[str, Any]:
    kwargs = {name: body[name] for name in names if body.get(name) is not None}
    for name, value in kwargs.items():
        types = _FIELD_TYPES.get(name)
        if types and (isinstance(value, bool) or not isinstance(value, types)):
            expected = "an integer" if types == (int,) else "a number"
            raise RequestError(400, f"{name} must be {expected}, got {value!r}", name)
    if "logit_bias" in kwargs:
        try:
            kwargs["logit_bias"] = {int(k): float(v) for k, v in kwargs["logit_bias"].items()}
        except (AttributeError, TypeError, ValueError):
            raise RequestError(
                400, "logit_bias must map token ids to numbers", "logit_bias"
            ) from None
    return kwargs


def _generate(
    pool: Pool, name: str, body: dict[str, Any], call: Callable[[Any, dict[str, Any]], Any]
) -> dict[str, Any] | Iterator[dict[str, Any]]:
    try:
        if body.get("stream"):
            return _stream(pool, name, call)
        with pool.context() as llama:
            result: dict[str, Any] = call(llama, {})
    except ValueError as exc:  # llama-cpp-python's word for a request it cannot take
        raise RequestError(400, str(exc)) from None
    return {**result, "model": name}


def _stream(
    pool: Pool, name: str, call: Callable[[Any, dict[str, Any]], Any]
) -> Iterator[dict[str, Any]]:
    def events() -> Generator[dict[str, Any], None, None]:
        # The context is held until the last token or until the client goes away (the
        # server then closes this generator).
        with pool.context() as llama:
            for chunk in call(llama, {"stream": True}):
                yield {**chunk, "model": name}

    chunks = events()
    first = next(chunks)  # a refused request (prompt over n_ctx...) fails here, before headers

    def rest() -> Generator[dict[str, Any], None, None]:
        try:
            yield first
            yield from chunks
        finally:
            chunks.close()

    return rest()


def build_routes(
    name: str, pool: Pool, embedder: Any | None, embed_lock: Any
) -> dict[tuple[str, str], Route]:
    def chat(body: dict[str, Any]) -> dict[str, Any] | Iterator[dict[str, Any]]:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise RequestError(400, "messages must be a non-empty list", "messages")
        kwargs = _pick(body, SAMPLING + CHAT_ONLY)
        return _generate(
            pool,
            name,
            body,
            lambda llama, extra: llama.create_chat_completion(messages=messages, **kwargs, **extra),
        )

    def completion(body: dict[str, Any]) -> dict[str, Any] | Iterator[dict[str, Any]]:
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not isinstance(prompt, str) and not (
            isinstance(prompt, list) and all(isinstance(t, int) for t in prompt)
        ):
            raise RequestError(400, "prompt must be a string or a list of token ids", "prompt")
        kwargs = _pick(body, SAMPLING + COMPLETION_ONLY)
        kwargs.setdefault("max_tokens", 16)  # OpenAI's default
        return _generate(
            pool,
            name,
            body,
            lambda llama, extra: llama.create_completion(prompt=prompt, **kwargs, **extra),
        )

    def embeddings(body: dict[str, Any]) -> dict[str, Any]:
        if embedder is None:
            raise RequestError(
                400, f"model {name} does not serve embeddings (set llama.cpp.embeddings: true)"
            )
        text = body.get("input")
        if not isinstance(text, str | list) or not text:
            raise RequestError(400, "input must be a string or a non-empty list", "input")
        with embed_lock:
            result: dict[str, Any] = embedder.create_embedding(text)
        for item in result["data"]:
            item["embedding"] = mean_pooled(item["embedding"])
        return {**result, "model": name}

    routes: dict[tuple[str, str], Route] = {
        ("GET", "/health"): lambda body: {"status": "ok"},
        ("GET", "/v1/models"): lambda body: model_list([name], "llama.cpp"),
        ("POST", "/v1/chat/completions"): chat,
        ("POST", "/v1/completions"): completion,
        ("POST", "/v1/embeddings"): embeddings,
    }
    return routes


def main(argv: Sequence[str] | None = None) -> int:
    import threading

    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.parallel < 1:
        print(f"--parallel must be at least 1, got {args.parallel}", file=sys.stderr)
        return 2
    name = args.served_name or os.path.basename(args.model)
    try:
        contexts = [load(args, embedding=False) for _ in range(args.parallel)]
        embedder = load(args, embedding=True) if args.embedding else None
    except (ValueError, OSError) as exc:  # llama-cpp-python's "failed to load model"
        print(f"cannot load {args.model}: {exc}", file=sys.stderr)
        return 1
    serve(args.host, args.port, build_routes(name, Pool(contexts), embedder, threading.Lock()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
