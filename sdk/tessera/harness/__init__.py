"""Test and benchmark harnesses: a local ``redis-server``, a world of real zone
processes driven by a minimal relay (or by auth and a real relay), a world whose
relays can be stopped and replaced under players, a UDP proxy that impairs
the network between clients and a relay, and a memory tripwire for test
processes. Tests, benchmarks, the demo and the
operator's local runtime use them; no service does."""
