"""The one request path (private): render, request, cache, retry, backend, result.

``runner.py`` draws the whole path; the public names are exported from :mod:`chatstep`.
"""
