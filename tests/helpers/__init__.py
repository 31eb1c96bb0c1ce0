"""Helpers shared by test files (importable as ``helpers.*``: pytest puts ``tests/`` on sys.path)."""
