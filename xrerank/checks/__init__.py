"""Checks: verify (does the deployment answer correctly), status (is it healthy), doctor (can it run)."""
