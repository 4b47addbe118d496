"""A WORKFLOW_MODULES entry whose import fails (the registry tests list it)."""

raise RuntimeError("broken on purpose")
