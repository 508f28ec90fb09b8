"""Rules: YAML files whose conditions, in a small safe expression language, turn predictions into decisions."""
