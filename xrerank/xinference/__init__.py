"""The Xinference adapter: its REST calls and typed records, the embedded server, keys, the session
that connects to a server, and the ledger of what xrerank launched there."""
