"""Benchmarks against a local PostgreSQL: bulk loader, in-process analytics timings and the
`make bench` HTTP harness (see docs/benchmarks.md)."""
