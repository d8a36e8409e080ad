"""Mapping a step over a dataset (private): run, options, columns, files, journal, rate limits.

The public names (:func:`chatstep.map_step`...) are exported from :mod:`chatstep`.
"""
