"""The durable primitives, one module each, over the helpers in :mod:`chrono_forge.steps`."""
