"""Incident reports on disk: the atomic store and the redaction of secrets."""
