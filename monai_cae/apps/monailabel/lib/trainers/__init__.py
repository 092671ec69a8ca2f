"""Train tasks."""
