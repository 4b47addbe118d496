"""An installed app (in the registry tests only) whose `workflows` module autodiscovery imports."""
