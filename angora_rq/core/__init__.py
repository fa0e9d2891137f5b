"""The pure core: definitions model, messages, topics, graph, plans, runs, keys, schema, commands-to-be.

No I/O here: no redis, rq, flask, subprocess or socket imports and no file access (tests/test_layers.py checks).
Everything the I/O shell decides is decided here, on plain data.
"""
