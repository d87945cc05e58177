"""Adapters: the only code that talks to Jenkins and to Docker engines; they return plain data."""
