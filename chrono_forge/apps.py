from django.apps import AppConfig


class ChronoForgeConfig(AppConfig):
    name = "chrono_forge"
    verbose_name = "Chrono Forge"

    def ready(self) -> None:
        from . import checks, registry  # noqa: F401  (importing checks registers them)

        registry.autodiscover()  # every app's `workflows` module, then WORKFLOW_MODULES
