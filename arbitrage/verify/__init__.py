"""Verifiers: answers checked by tools made for the purpose rather than by patterns.

`verify.code` runs a candidate program against its tests (HumanEval's `check(candidate)`, MBPP's
asserts) in a sandboxed subprocess: CPU, memory, file-size and process limits, a wall-clock
timeout, a fresh directory and no network. Issue 23 ("Rows you can trust").
"""
