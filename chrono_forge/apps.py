from django.apps import AppConfig


class ChronoForgeConfig(AppConfig):
    name = "chrono_forge"
    verbose_name = "Chrono Forge"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the system checks)
