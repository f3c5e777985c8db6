"""The chaos soak's bookkeeping on synthetic outcomes: what counts as lost, hung, or
caused by which fault (benchmarks/chaos_report.py, benchmarks/chaos_workload.py)."""

from __future__ import annotations

import random

from benchmarks.chaos_report import fault_effects, markdown, summarise
from benchmarks.chaos_workload import MIX, JobFate, Outcome, _stream_status, draw


def outcome(kind: str, status: str, sent: float, took: float, **kw: object) -> Outcome:
    return Outcome(kind, status, took, sent_at_s=sent, **kw)  # type: ignore[arg-type]


OUTCOMES = [
    outcome("openai", "200", 0.0, 1.0),
    outcome("openai", "200", 1.0, 3.0),
    outcome("openai", "503", 2.0, 0.5, retry_after="5"),
    outcome("edit", "hang", 3.0, 90.0),
    outcome("edit", "429", 8.0, 0.1),  # no Retry-After
    outcome("async", "202", 4.0, 0.1, job_id="job_a"),
    outcome("async", "202", 5.0, 0.1, job_id="job_b"),
    outcome("async", "202", 6.0, 0.1, job_id="job_c"),
]
FATES = [
    JobFate("job_a", "async", "succeeded", 1, 4.0),
    JobFate("job_b", "async", "succeeded", 2, 20.0),
    JobFate("job_c", "async", "unfinished", None, 600.0),
]


def test_summary_counts_lost_jobs_hangs_and_bare_refusals() -> None:
    summary = summarise(OUTCOMES, FATES, deadline_s=90)
    assert summary["requests"] == 8
    assert summary["by_status"] == {"202": 3, "200": 2, "503": 1, "hang": 1, "429": 1}
    assert summary["hangs"] == 1
    assert summary["jobs_lost"] == 1 and summary["lost_jobs"][0]["job_id"] == "job_c"
    assert summary["jobs_by_attempt"] == {"1": 1, "2": 1, "None": 1}
    assert summary["refusals_without_retry_after"] == 1
    assert summary["sync_success_p50_ms"] == 2000.0  # of 1 s and 3 s
    assert summary["job_success_p99_s"] == 19.8
    assert summary["by_kind"]["edit"]["p50_ms"] is None  # nothing of it succeeded


def test_a_failed_answer_is_put_down_to_one_fault() -> None:
    faults = [{"fault": "kill Model", "at_s": 2.2}, {"fault": "remove worker_a", "at_s": 3.5}]
    effects = fault_effects(faults, OUTCOMES, window_s=5.0)
    # The 503 (sent at 2.0) and the hang (sent at 3.0) were in flight at 2.2; the 429
    # came 5.8 s after the first fault, outside its window, but inside the second's.
    assert effects[0]["failed_answers"] == {"503": 1, "hang": 1}
    assert effects[1]["failed_answers"] == {"429": 1}


def test_stream_outcomes() -> None:
    completed = 'event: image_generation.completed\ndata: {"b64_json":"x"}\n\n'
    error = 'event: error\ndata: {"type":"error","error":{"code":"replica_failed"}}\n\n'
    assert _stream_status(200, completed) == "200"
    assert _stream_status(200, error) == "200+error:replica_failed"
    assert _stream_status(200, "event: image_generation.partial_image\n\n") == "200+truncated"
    assert _stream_status(429, "") == "429"


def test_the_mix_covers_every_route_and_kind() -> None:
    assert sum(weight for weight, _ in MIX.values()) == 100
    routes = set()
    for kind, (_, build) in MIX.items():
        request = build(7, random.Random(7))
        routes.add(request["url"])
        assert request["method"] == "POST"
        if kind.startswith("async"):
            assert request["headers"] == {"prefer": "respond-async"}
    assert routes == {
        "/v1/images/generations", "/v1/images/edits", "/v1/images/imagine",
        "/sdapi/v1/txt2img", "/sdapi/v1/img2img",
    }  # fmt: skip
    rng = random.Random(1)
    assert {draw(rng) for _ in range(2000)} == set(MIX)


def test_markdown_names_the_command_and_the_targets() -> None:
    doc = {
        "config": {"command": "python -m benchmarks.chaos --requests 8", "date": "d",
                   "machine": "m", "uptime_before": "u1", "uptime_after": "u2"},
        "elapsed_s": 12.0,
        "summary": summarise(OUTCOMES, FATES, deadline_s=90),
        "faults": fault_effects([{"fault": "remove worker_a", "node": "worker_a",
                                  "at_s": 3.5}], OUTCOMES, 5.0),
        "memory": [{"pid": 1, "name": "raylet", "rss_mib": 50.0}],
    }  # fmt: skip
    text = markdown(doc)
    assert "`python -m benchmarks.chaos --requests 8`" in text
    assert "| **jobs lost** (target 0) | **1** |" in text
    assert "| **hangs** (no answer in 90 s; target 0) | **1** |" in text
    assert "| `raylet` | 1 | 50.0 |" in text
