"""Speed and memory benchmarks; run each from the repository root as `python -m benchmarks.<name> [--quick]`."""
