"""The `lake` command line: subcommands that call lake / ingest / server."""
