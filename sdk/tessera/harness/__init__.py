"""Test and benchmark harnesses: a local ``redis-server`` and a world of real zone
processes driven by a minimal relay. Tests, benchmarks, the demo and the
operator's local runtime use them; no service does."""
