"""Settings of the qcluster that the tracing end-to-end test starts: the test settings plus the
OpenTelemetry SDK configured as a project would configure its workers, with an exporter that
appends each finished span as one JSON line to the file named by CHRONO_FORGE_TEST_SPANS (the
test process reads it back). The test process itself keeps tests.settings."""

import json
import os

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from tests.settings import *  # noqa: F403


class JsonLinesSpanExporter(SpanExporter):
    """Appends each span to a file as a JSON line: name, ids, parent and attributes."""

    def __init__(self, path):
        self.path = path

    def export(self, spans):
        with open(self.path, "a", encoding="utf-8") as out:
            for span in spans:
                parent = span.parent
                out.write(
                    json.dumps(
                        {
                            "name": span.name,
                            "trace_id": f"{span.context.trace_id:032x}",
                            "span_id": f"{span.context.span_id:016x}",
                            "parent_span_id": f"{parent.span_id:016x}" if parent else None,
                            "attributes": dict(span.attributes or {}),
                        }
                    )
                    + "\n"
                )
        return SpanExportResult.SUCCESS


_provider = TracerProvider()
_provider.add_span_processor(
    SimpleSpanProcessor(JsonLinesSpanExporter(os.environ["CHRONO_FORGE_TEST_SPANS"]))
)
trace.set_tracer_provider(_provider)
