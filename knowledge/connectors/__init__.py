"""Connectors: knowledge where support teams keep it (Zendesk Help Center, Confluence, Notion, GitHub).

Each connector lists what changed since its persisted cursor and yields a `SourceLoad` the index
applies like any other source; `registry` maps `--source` URIs and `supportbot-sources.yml`
entries to connectors.
"""
