"""Kestra-style flow files (private modules; the public names are exported from :mod:`chatstep`)."""
