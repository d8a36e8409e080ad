"""``chatstep ui``: the call history and the map and batch journals in a browser, on Datasette.

``sources`` finds and recognises the databases, ``queries`` holds the SQL of the canned queries
and charts, ``metadata`` generates Datasette's configuration, ``server`` builds the read-only
Datasette app, ``plugin`` is chatstep's own small Datasette plugin. Only ``server`` and
``plugin`` import Datasette (the ``[ui]`` extra).
"""
