"""Context Lake's gRPC contracts, one sub-package per version."""
