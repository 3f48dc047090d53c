"""Evaluators built once per run, classification metrics, the few-shot probe."""
