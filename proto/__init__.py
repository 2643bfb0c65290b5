"""The gRPC contract: ``.proto`` files and their generated Python stubs.

Regenerate the stubs with ``make proto`` (``python -m proto.generate``); a test fails when
the committed stubs differ from what the ``.proto`` files generate.
"""
