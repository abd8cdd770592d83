"""Reading a Prometheus exposition in tests, and apps with `[metrics]` enabled."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from exporter_api.config import ExportConfig, MetricsConfig, default_config_path, load_config


def sample(text: str, name: str, **labels: str) -> float:
    """The value of sample ``name`` with ``labels`` (0 when absent: counters start there)."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0


def metrics_config(
    allow_from: list[str] | None = None, path: Path | None = None, **changes: object
) -> ExportConfig:
    config = load_config(path or default_config_path())
    config.metrics = MetricsConfig(
        enabled=True,
        allow_from=["127.0.0.1/32"] if allow_from is None else allow_from,
    )
    for name, value in changes.items():
        setattr(config.metrics, name, value)
    return config


def demo_toml_with_metrics(directory: Path) -> Path:
    """A copy of the demo catalog with ``[metrics] enabled`` (loopback scrapers)."""
    from tests.services import demo_config

    config = demo_config(directory)
    with config.open("a", encoding="utf-8") as file:
        file.write('\n[metrics]\nenabled = true\nallow_from = ["127.0.0.1/32"]\n')
    return config
