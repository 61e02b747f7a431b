"""Benchmarks of the product on this machine (`rag bench`): outside the library, which never imports it."""
