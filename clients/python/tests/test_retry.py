"""Full-jitter backoff; the retry loop's decisions are pinned by test_behaviour_vectors.py (retry.json)."""

from __future__ import annotations

from keymesh_client.retry import full_jitter


def test_full_jitter_is_random_below_an_exponential_ceiling() -> None:
    assert full_jitter(0.1, 5.0, 0, rand=lambda: 0.0) == 0.0
    assert full_jitter(0.1, 5.0, 0, rand=lambda: 0.5) == 0.05
    assert full_jitter(0.1, 5.0, 3, rand=lambda: 0.5) == 0.4
    assert full_jitter(0.1, 5.0, 10, rand=lambda: 0.5) == 2.5
    assert full_jitter(0.1, 5.0, 10_000, rand=lambda: 0.999) < 5.0
