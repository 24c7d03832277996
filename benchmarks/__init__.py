"""Benchmarks of the flow (run as scripts) and the reference implementations the tests and the
benchmarks compare the production kernels with (:mod:`benchmarks.reference_graph`)."""
