"""The gRPC service: thin servicers over the lake, the only place that knows status codes.

``server.app.serve(settings)`` starts it; ``server.client.LakeClient`` talks to it.
Imports ``lake`` and ``ingest``; never ``cli``.
"""
