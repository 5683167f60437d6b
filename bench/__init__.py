"""custody's benchmarks: `python -m bench` (or `custody bench`) measures throughput on a fresh local stack."""
