"""Tests of `edged models fetch` and the model store."""
