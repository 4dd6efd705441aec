"""Guardrails on what a call sends: personal data and secrets (pii), document sources (rag)."""
