"""The pure core: settings in, {relative path: bytes} out."""

from __future__ import annotations

from generator.artifacts import auth, bucket, compose, grafana, graphql, image, kubernetes, nginx, prometheus, serving, sql
from generator.settings import Settings


def build(settings: Settings) -> dict[str, bytes]:
    """Every artifact for these settings; nothing when MLflow is disabled."""
    if not settings.server.enabled:
        return {}
    image_files = image.build(settings)
    serving_files = serving.build(settings)
    files = {
        **image_files,
        **serving_files,
        **compose.build(settings, image_files, serving_files),
        **sql.build(settings),
        **auth.build(settings),
        **bucket.build(settings),
        **nginx.build(settings),
        **prometheus.build(settings),
        **grafana.build(settings),
        **graphql.build(settings),
        **kubernetes.build(settings, image_files),
    }
    return dict(sorted(files.items()))
