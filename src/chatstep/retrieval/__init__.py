"""Retrieval (RAG): text files chunked, embedded and stored in a sqlite-vec index; ``retrieve:``.

``chunking`` turns files into chunks, ``store`` is the index file (SQLite + sqlite-vec),
``build`` embeds what changed through the request pipeline, ``retrieve`` answers a step's query.
Needs the ``[rag]`` extra (``sqlite-vec``, ``sqlean-py``, ``semantic-text-splitter``).
"""
