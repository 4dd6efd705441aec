"""Numbered SQL migrations, shipped as package data of warden.migrations."""
