"""Evaluation: suites, metrics, judges, runner, gate and reports."""
