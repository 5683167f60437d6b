"""`python -m bench`: the throughput benchmark (see bench/README.md)."""

from bench.throughput import main

main()
