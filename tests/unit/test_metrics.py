"""Metrics: own registry per instance, state gauges, engine metrics relabelled."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from modelrunner.metrics import Metrics, relabel

VLLM_TEXT = """# HELP vllm:num_requests_running Requests running.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="tiny"} 2.0
# HELP vllm:prompt_tokens_total Prompt tokens.
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{model="tiny"} 12.0
"""


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_each_metrics_has_its_own_registry() -> None:
    a, b = Metrics(), Metrics()
    a.reconcile_passes.inc()
    assert samples(a.exposition())[("mr_reconcile_passes_total", ())] == 1.0
    assert samples(b.exposition())[("mr_reconcile_passes_total", ())] == 0.0


def test_instance_state_is_one_hot() -> None:
    m = Metrics()
    m.instance_state("smollm2", "starting")
    m.instance_state("smollm2", "ready")
    got = samples(m.exposition())
    assert got[("mr_instance_state", (("model", "smollm2"), ("state", "ready")))] == 1.0
    assert got[("mr_instance_state", (("model", "smollm2"), ("state", "starting")))] == 0.0
    m.forget_model("smollm2")
    assert not any(name == "mr_instance_state" for name, _ in samples(m.exposition()))


def test_unknown_state_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown instance state 'up' for smollm2"):
        Metrics().instance_state("smollm2", "up")


def test_requests_tokens_and_in_flight() -> None:
    m = Metrics()
    m.record_request("chat/completions", "smollm2", 200, 0.02)
    m.add_tokens("smollm2", 3, 7)
    m.set_in_flight({"smollm2": 2})
    m.set_in_flight({"other": 1})
    got = samples(m.exposition())
    assert (
        got[
            (
                "mr_requests_total",
                (("model", "smollm2"), ("route", "chat/completions"), ("status", "200")),
            )
        ]
        == 1
    )
    assert got[("mr_tokens_total", (("kind", "completion"), ("model", "smollm2")))] == 7
    assert ("mr_requests_in_flight", (("model", "smollm2"),)) not in got
    assert got[("mr_requests_in_flight", (("model", "other"),))] == 1


def test_relabel_adds_model_and_merges_families() -> None:
    got = samples(relabel({"a": VLLM_TEXT, "b": VLLM_TEXT}))
    assert got[("vllm:num_requests_running", (("model", "a"), ("model_name", "tiny")))] == 2.0
    assert got[("vllm:num_requests_running", (("model", "b"), ("model_name", "tiny")))] == 2.0
    # an engine's own `model` label is kept as exported_model
    assert got[("vllm:prompt_tokens_total", (("exported_model", "tiny"), ("model", "a")))] == 12.0


def test_relabel_skips_text_that_is_not_prometheus() -> None:
    assert relabel({"a": "<html>not metrics</html>"}) == b""
