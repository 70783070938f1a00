"""The scheduler in this process, on the real SmolLM2: a request whose delivery raises ends
that request only, while the requests beside it run on and later ones are served."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from modelrunner.engines.llamacpp.engine import Engine
    from modelrunner.engines.llamacpp.jobs import Job

pytestmark = pytest.mark.engine
BODY = {"messages": [{"role": "user", "content": "Count to five"}], "max_tokens": 24,
        "temperature": 0}  # fmt: skip


@pytest.fixture(scope="module")
def engine(smollm2_gguf: Path) -> Iterator[Engine]:
    from modelrunner.engines.llamacpp.engine import Engine, EngineConfig
    from modelrunner.engines.llamacpp.model import quiet_llama

    quiet_llama(False)
    e = Engine(EngineConfig(str(smollm2_gguf), "smollm2", context_size=256, parallel=3))
    e.start()
    yield e
    e.stop()


def outcome(job: Job) -> Any:
    """The text a job generated, or the Failed event that ended it."""
    from modelrunner.engines.llamacpp.jobs import Delta, Finished

    parts = []
    while True:
        event = job.events.get(timeout=120)
        if isinstance(event, Delta):
            parts.append(event.text)
        elif isinstance(event, Finished):
            return "".join(parts) + event.text
        else:
            return event


def test_the_step_loop_survives_a_request_that_raises(engine: Engine) -> None:
    from modelrunner.engines.llamacpp.jobs import Delta, Event, Failed, Job

    class Raising(Job):
        def emit(self, event: Event) -> None:
            if isinstance(event, Delta) and event.text:
                raise RuntimeError("the receiver broke")
            super().emit(event)

    def submit(job: Job) -> Job:
        engine.scheduler.submit(job)
        return job

    alone = outcome(submit(engine.chat_job(BODY)[0]))
    good = [engine.chat_job(BODY)[0] for _ in range(2)]
    template = engine.chat_job(BODY)[0]
    bad = Raising(template.prompt, template.generation, template.chain)
    for job in (good[0], bad, good[1]):
        submit(job)
    assert [outcome(job) for job in good] == [alone, alone]
    failed = outcome(bad)
    assert isinstance(failed, Failed) and "the receiver broke" in failed.message
    assert engine.scheduler.busy() == 0
    assert outcome(submit(engine.chat_job(BODY)[0])) == alone  # and it goes on serving
