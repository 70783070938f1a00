"""The engine: one model, one batched context, the scheduler, the chat template and the
optional embedder; turns request bodies into scheduler jobs (the HTTP side runs them)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from modelrunner.engines.llamacpp import structured_hook as structured
from modelrunner.engines.llamacpp.answers import ChatOutput, CompletionOutput, one_answer
from modelrunner.engines.llamacpp.chat_template import CHATML, ChatTemplate, check_messages
from modelrunner.engines.llamacpp.choices import check_fits, choice_seeds
from modelrunner.engines.llamacpp.jobs import Job
from modelrunner.engines.llamacpp.metrics import EngineMetrics
from modelrunner.engines.llamacpp.model import Context, ContextSettings, Model
from modelrunner.engines.llamacpp.params import Generation, parse_generation
from modelrunner.engines.llamacpp.sampling import DEFAULT_SEED, SamplerChain
from modelrunner.engines.llamacpp.scheduler import Scheduler
from modelrunner.engines.serving import RequestError

COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # OpenAI's default for /v1/completions


@dataclass(frozen=True, slots=True)
class EngineConfig:
    model_path: str
    name: str
    context_size: int = 4096  # KV cache tokens of each slot
    parallel: int = 1  # slots: requests decoded together
    threads: int = 1
    n_batch: int = 512
    n_ubatch: int = 512
    n_gpu_layers: int = 0
    embedding: bool = False
    chat_template_file: str | None = None
    flash_attn: bool | None = None
    rope_freq_base: float = 0.0
    rope_freq_scale: float = 0.0
    seed: int = DEFAULT_SEED
    use_mmap: bool = True  # False: read into memory (main.py decides; huge_pages)
    use_mlock: bool = False
    type_k: int | None = None
    type_v: int | None = None
    max_queue: int = 64


class Engine:
    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.name = config.name
        self.model = Model(
            config.model_path, config.n_gpu_layers, config.use_mmap, config.use_mlock
        )
        threads = config.threads
        slots = max(1, config.parallel)
        self.context = Context(
            self.model,
            ContextSettings(
                n_ctx=config.context_size * slots,
                n_seq_max=slots,
                n_batch=max(config.n_batch, slots),
                n_ubatch=max(min(config.n_ubatch, config.n_batch), 1),
                n_threads=threads,
                n_threads_batch=threads,
                flash_attn=config.flash_attn,
                rope_freq_base=config.rope_freq_base,
                rope_freq_scale=config.rope_freq_scale,
                type_k=config.type_k,
                type_v=config.type_v,
            ),
        )
        source = None
        if config.chat_template_file:
            with open(config.chat_template_file, encoding="utf-8") as f:
                source = f.read()
        source = source or self.model.chat_template() or CHATML
        self.template = ChatTemplate(source, self.model.bos_text, self.model.eos_text)
        self.tool_support = structured.inspect(source, self.template)
        self.metrics = EngineMetrics(slots)
        self.scheduler = Scheduler(self.context, slots, config.max_queue, self.metrics)
        self.metrics.watch(self.scheduler.busy, self.scheduler.queued)
        self.embedder = None
        if config.embedding:
            from modelrunner.engines.llamacpp.embeddings import Embedder

            self.embedder = Embedder(self.model, config.context_size, threads)

    def start(self) -> None:
        self.scheduler.start()

    def stop(self) -> None:
        self.scheduler.stop()

    # -- requests -> jobs -----------------------------------------------------------------
    def chat_job(self, body: Mapping[str, Any]) -> tuple[Job, list[ChatOutput]]:
        """The job and an answer object per choice (``n``)."""
        messages = check_messages(body.get("messages"))
        # response_format, tools and logprobs: messages and tools shaped for the template,
        # the request's grammar, and the answer hook that reads tool calls back.
        chat = structured.plan(body, messages, self.tool_support)
        structured.compile_grammar(self.model.masks, chat)
        generation = structured.with_plan(
            parse_generation(body, self.model.n_vocab, response_format=False), chat
        )
        prompt = self.template.render(chat.messages, tools=chat.tools)
        tokens = self.model.tokenize(prompt, add_special=True, parse_special=True)
        bos = self.model.bos_text
        if len(tokens) > 1 and tokens[0] == tokens[1] and bos and prompt.startswith(bos):
            tokens = tokens[1:]  # the template wrote the BOS the tokenizer added again
        job = self._job(tokens, generation, "messages")
        outputs: list[ChatOutput] = [
            structured.StructuredChatOutput(
                self.name, chat.output, self.model.piece, chat.logprobs, chat.schema, index=i
            )
            for i in range(job.n)
        ]
        return job, one_answer(outputs)

    def completion_job(self, body: Mapping[str, Any]) -> tuple[Job, list[CompletionOutput]]:
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if isinstance(prompt, str):
            tokens = self.model.tokenize(prompt, add_special=True, parse_special=False)
        elif (
            isinstance(prompt, list)
            and prompt
            and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt)
        ):
            if any(not 0 <= t < self.model.n_vocab for t in prompt):
                raise RequestError(400, "prompt holds a token id outside the vocabulary", "prompt")
            tokens = list(prompt)
        else:
            raise RequestError(
                400,
                "prompt must be a string or a list of token ids (one prompt per request)",
                "prompt",
            )
        for name, unsupported in (
            ("echo", body.get("echo") not in (None, False)),
            ("suffix", body.get("suffix") not in (None, "")),
            ("best_of", body.get("best_of") not in (None, 1)),
        ):
            if unsupported:
                raise RequestError(400, f"{name} is not supported by this engine", name)
        generation = parse_generation(body, self.model.n_vocab, COMPLETIONS_DEFAULT_MAX_TOKENS)
        job = self._job(tokens, generation, "prompt")
        return job, one_answer([CompletionOutput(self.name, i) for i in range(job.n)])

    def _job(self, tokens: list[int], generation: Generation, field: str) -> Job:
        if not tokens:
            raise RequestError(400, f"{field} gives an empty prompt", field)
        limit = self.context.n_ctx_seq
        if len(tokens) >= limit:
            raise RequestError(
                400,
                f"the prompt has {len(tokens)} tokens, over this model's context window of "
                f"{limit} tokens per request",
                field,
            )
        check_fits(generation.n, len(self.scheduler.slots))
        # A chain per choice, each with its own seed: choice i samples with seed + i.
        seeds = choice_seeds(generation.sampling.seed, self.config.seed, generation.n)
        chains: list[SamplerChain] = []
        try:
            for seed in seeds:
                sampling = replace(generation.sampling, seed=seed)
                chains.append(SamplerChain(self.model, sampling, self.config.seed))
        except BaseException:
            for chain in chains:
                chain.close()
            raise
        return Job(tokens, generation, *chains)
