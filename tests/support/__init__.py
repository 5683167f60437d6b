"""Helpers shared by several test modules (not tests themselves): a test module imports from here
or from tests/conftest.py, never from another test module."""
