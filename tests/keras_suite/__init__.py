"""Keras' own test modules, run against ``StepModel(model, step="supervised")``.

See ``tests/test_keras_suite.py``; ``python -m keras_suite [MODULE...]`` (from
``tests/``) runs modules by hand and prints their failures.
"""
