"""Context Lake's store: schema, write-ahead log, versioned Lance tables, SQL.

Knows nothing of gRPC, files on the wire, or the CLI.
"""

from .errors import (
                     AlreadyExists,
                     Conflict,
                     DeadlineExceeded,
                     InvalidArgument,
                     LakeError,
                     NotFound,
                     PermissionDenied,
                     ResourceExhausted,
                     Unauthenticated,
                     Unavailable,
)
from .lake import IngestResult, Lake, Reject
from .settings import Settings

__all__ = ["Lake", "IngestResult", "Reject", "Settings", "LakeError", "InvalidArgument",
           "NotFound", "AlreadyExists", "Conflict", "PermissionDenied", "Unauthenticated",
           "ResourceExhausted", "Unavailable", "DeadlineExceeded"]
