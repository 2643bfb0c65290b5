"""Context Lake's gRPC contract, version 1 (generated stubs: `make proto`)."""
