"""Recipes: YAML read safely into nested frozen dataclasses, every key checked (schema, data section, whole recipe)."""
