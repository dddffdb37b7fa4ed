"""Conformance checks any step can run (filled in by the conformance kit)."""
