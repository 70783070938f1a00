"""Continuous batching: one thread runs every request of the model through one context.

Each step builds one batch (a token for every decoding slot, then prompt chunks up to
``n_batch``), runs one ``llama_decode``, and samples every slot whose logits came out.
Requests beyond the slots wait in a bounded FIFO queue. A slot keeps its tokens' KV cache
after its request ends, and the next request goes to the free slot sharing the longest
prefix with its prompt (slots.choose_slot), so only the rest is decoded.

A request with ``n`` choices takes ``n`` slots at once: choice 0 decodes the prompt, the
others then start from a copy of its KV cache (``llama_memory_seq_cp``), each with its own
sampler chain, and all ``n`` decode in the same batches.

One request's failure ends that request only; the loop itself never stops on an error.
"""

from __future__ import annotations

import collections
import itertools
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Protocol

import llama_cpp as C

from modelrunner.engines.llamacpp.detokenize import Utf8Stream
from modelrunner.engines.llamacpp.jobs import Delta, Failed, Finished, Job, QueueFull, TokenCounts
from modelrunner.engines.llamacpp.model import Batch, Context
from modelrunner.engines.llamacpp.sampling import logprobs_of
from modelrunner.engines.llamacpp.slots import choose_slots, plan_batch
from modelrunner.engines.llamacpp.stops import scan_stops

log = logging.getLogger("modelrunner.llamacpp")


class StepObserver(Protocol):
    """What the scheduler reports (the metrics module implements it)."""

    def step(self, seconds: float, tokens: int) -> None: ...
    def prompt_tokens(self, decoded: int, reused: int) -> None: ...
    def generated_tokens(self, count: int) -> None: ...


class NoObserver:
    def step(self, seconds: float, tokens: int) -> None:
        pass

    def prompt_tokens(self, decoded: int, reused: int) -> None:
        pass

    def generated_tokens(self, count: int) -> None:
        pass


@dataclass(eq=False)
class Slot:
    seq: int
    cached: list[int] = field(default_factory=list)  # tokens whose KV the cache holds
    job: Job | None = None
    choice: int = 0  # which of the job's choices this slot generates
    pending: list[int] = field(default_factory=list)  # tokens to decode next
    prefilling: bool = False
    waiting: bool = False  # a choice > 0 until choice 0's prompt is decoded
    admitted: int = 0  # admission order: prompt chunks go oldest first
    last_used: int = 0  # for least-recently-used ties
    completion_tokens: int = 0
    cached_tokens: int = 0
    held: str = ""
    utf8: Utf8Stream = field(default_factory=Utf8Stream)


class Scheduler:
    def __init__(
        self,
        context: Context,
        slots: int,
        max_queue: int,
        observer: StepObserver | None = None,
    ) -> None:
        self.context = context
        self.model = context.model
        self.slots = [Slot(seq) for seq in range(slots)]
        self.max_queue = max_queue
        self.n_batch = context.n_batch
        self.observer: StepObserver = observer or NoObserver()
        self._queue: collections.deque[Job] = collections.deque()
        self._lock = threading.Condition()
        self._stopping = False
        self._free = slots
        self._clock = itertools.count(1)
        self._batch = Batch(self.n_batch)
        self._thread = threading.Thread(target=self._run, name="llamacpp-scheduler", daemon=True)

    # -- the HTTP threads' side --------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def submit(self, job: Job) -> None:
        with self._lock:
            if len(self._queue) >= self.max_queue + self._free:
                raise QueueFull
            self._queue.append(job)
            self._lock.notify()

    def cancel(self, job: Job) -> None:
        """The client went away: its slot is freed at the next step."""
        with self._lock:
            job.cancelled = True
            self._lock.notify()

    def queued(self) -> int:
        return len(self._queue)

    def busy(self) -> int:
        return len(self.slots) - self._free

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            self._lock.notify()
        self._thread.join(30)

    # -- the scheduler thread ------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._stopping and not self._queue and self._free == len(self.slots):
                    self._lock.wait()
                if self._stopping:
                    break
            try:
                self._step()
            except Exception:  # never let one bad step end the loop
                log.exception("scheduler step failed; failing the requests in it")
                for slot in self.slots:
                    if slot.job is not None:
                        self._fail(slot, "internal error in the engine's step loop")
        for slot in self.slots:
            if slot.job is not None:
                self._fail(slot, "the engine is shutting down")
        with self._lock:
            while self._queue:
                self._queue.popleft().emit(Failed("the engine is shutting down"))

    def _step(self) -> None:
        self._drop_cancelled()
        self._admit()
        active = [s for s in self.slots if s.job is not None]
        if not active:
            return
        decoding = [s.seq for s in active if not s.prefilling and not s.waiting]
        prefilling = sorted((s for s in active if s.prefilling), key=lambda s: s.admitted)
        plan = plan_batch(decoding, [(s.seq, len(s.pending)) for s in prefilling], self.n_batch)
        batch = self._batch
        batch.clear()
        outputs: list[tuple[Slot, int]] = []
        starts: dict[int, int] = {}
        prompt_decoded = 0
        for chunk in plan:
            slot = self.slots[chunk.slot]
            starts[slot.seq] = len(slot.cached)
            tokens = slot.pending[: chunk.tokens]
            del slot.pending[: chunk.tokens]
            last = len(tokens) - 1
            for i, token in enumerate(tokens):
                index = batch.add(token, len(slot.cached), slot.seq, i == last and not slot.pending)
                slot.cached.append(token)
            if slot.prefilling:
                prompt_decoded += len(tokens)
            if not slot.pending:
                outputs.append((slot, index))
        started = time.perf_counter()
        status = batch.decode(self.context)
        self.observer.step(time.perf_counter() - started, batch.size)
        if status != 0:
            log.error("llama_decode returned %d for a batch of %d tokens", status, batch.size)
            for chunk in plan:
                slot = self.slots[chunk.slot]
                del slot.cached[starts[slot.seq] :]
                self.context.forget(slot.seq, starts[slot.seq])
                if slot.job is not None:  # else failed with another choice of its job
                    self._fail(slot, f"llama_decode failed ({status})")
            return
        if prompt_decoded:
            self.observer.prompt_tokens(prompt_decoded, 0)
        generated = 0
        for slot, index in outputs:
            job = slot.job
            if job is None:  # failed with another choice of its job in this loop
                continue
            try:
                generated += self._sample(slot, index)
            except Exception as exc:  # this request only
                log.exception("request failed while sampling")
                self._fail_job(job, f"{type(exc).__name__}: {exc}")
        if generated:
            self.observer.generated_tokens(generated)

    def _drop_cancelled(self) -> None:
        with self._lock:
            if any(job.cancelled for job in self._queue):
                for job in [j for j in self._queue if j.cancelled]:
                    self._queue.remove(job)
                    for choice in range(job.n):
                        usage = TokenCounts(len(job.prompt), 0, 0)
                        job.emit(Finished("cancelled", usage, choice=choice))
                    job.close()
        for slot in self.slots:
            if slot.job is not None and slot.job.cancelled:
                self._finish(slot, "cancelled")

    def _admit(self) -> None:
        while True:
            free = sorted((s for s in self.slots if s.job is None), key=lambda s: s.last_used)
            with self._lock:
                # FIFO: the oldest request waits until it has a slot for each choice.
                if not self._queue or self._queue[0].n > len(free):
                    return
                job = self._queue.popleft()
                self._free -= job.n
            placement = choose_slots([(s.seq, s.cached) for s in free], job.prompt, job.n)
            slot = self.slots[placement.first.slot]
            reused = placement.first.reused
            if not self.context.forget(slot.seq, reused):
                self.context.forget(slot.seq)
                reused = 0
            del slot.cached[reused:]
            self._take(slot, job, 0, reused)
            slot.pending = job.prompt[reused:]
            slot.prefilling = True
            for choice, seq in enumerate(placement.others, 1):
                # Its cache stays as it is until choice 0's prompt is in (then it is copied).
                self._take(self.slots[seq], job, choice, reused)
                self.slots[seq].waiting = True
            self.observer.prompt_tokens(0, reused)

    def _take(self, slot: Slot, job: Job, choice: int, reused: int) -> None:
        slot.job = job
        slot.choice = choice
        slot.admitted = next(self._clock)
        slot.completion_tokens = 0
        slot.cached_tokens = reused
        slot.held = ""
        slot.utf8 = Utf8Stream()

    def _sample(self, slot: Slot, index: int) -> int:
        """Sample ``slot``'s next token; when it is choice 0 and its prompt is in, the
        other choices' first tokens too, from the same logits. Returns the tokens sampled."""
        job = slot.job
        assert job is not None
        others = [s for s in self.slots if s.job is job and s.waiting] if job.n > 1 else []
        others.sort(key=lambda s: s.choice)
        for other in others:
            # The whole stream is copied (the only copy llama.cpp does between the
            # per-sequence caches), at the start of the next llama_decode.
            C.llama_memory_seq_cp(self.context.memory, slot.seq, other.seq, -1, -1)
            other.cached = list(slot.cached)
            other.waiting = False
        self._sample_choice(slot, index)
        for other in others:
            self._sample_choice(other, index)
        return 1 + len(others)

    def _sample_choice(self, slot: Slot, index: int) -> None:
        job = slot.job
        assert job is not None
        token = job.chains[slot.choice].sample(self.context, index)
        slot.prefilling = False
        slot.completion_tokens += 1
        generation = job.generation
        logprobs = None
        if generation.top_logprobs is not None:
            logprobs = logprobs_of(self.context, index, token, generation.top_logprobs)
        if self.model.is_eog(token):
            job.emit(Delta("", token, logprobs, slot.choice))
            self._finish(slot, "stop")
            return
        text = slot.utf8.push(self.model.piece(token))
        scan = scan_stops(slot.held, text, generation.stop)
        slot.held = scan.held
        job.emit(Delta(scan.emit, token, logprobs, slot.choice))
        if scan.stopped:  # what follows the stop string is never sent
            slot.held = ""
            self._finish(slot, "stop", flush=False, stop=scan.matched)
        elif (
            generation.max_tokens is not None and slot.completion_tokens >= generation.max_tokens
        ) or len(slot.cached) >= self.context.n_ctx_seq:
            self._finish(slot, "length")
        else:
            slot.pending = [token]

    def _release(self, slot: Slot) -> Job:
        job = slot.job
        assert job is not None
        job.chains[slot.choice].close()
        slot.job = None
        slot.pending = []
        slot.prefilling = False
        slot.waiting = False
        slot.last_used = next(self._clock)
        with self._lock:
            self._free += 1
        return job

    def _finish(self, slot: Slot, reason: str, flush: bool = True, stop: str | None = None) -> None:
        tail = slot.utf8.flush()
        rest = slot.held + tail if flush else ""
        job = self._release(slot)
        usage = TokenCounts(len(job.prompt), slot.completion_tokens, slot.cached_tokens)
        _last_word(job, Finished(reason, usage, rest, stop, slot.choice))

    def _fail(self, slot: Slot, message: str) -> None:
        assert slot.job is not None
        self._fail_job(slot.job, message)

    def _fail_job(self, job: Job, message: str) -> None:
        """Every choice of ``job`` still running ends, with one ``Failed`` for the request
        (nothing if all its choices had finished: its answer is complete)."""
        held = [slot for slot in self.slots if slot.job is job]
        for slot in held:
            # The cache may hold a half-decoded prompt: keep only what is known good.
            self.context.forget(slot.seq)
            slot.cached = []
            self._release(slot)
        if held:
            _last_word(job, Failed(message))


def _last_word(job: Job, event: Finished | Failed) -> None:
    """A job's end is told once; a receiver that fails then is only logged."""
    try:
        job.emit(event)
    except Exception:
        log.exception("could not deliver the end of a request")
