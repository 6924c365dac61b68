"""What route handlers get injected: the model manager, the engine, the embedding batcher, metrics and settings."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from gemmacli.media import MediaLimits
from gemmacli.server.batching import EmbedBatcher
from gemmacli.server.engine import Engine
from gemmacli.server.metrics import Metrics
from gemmacli.server.models_manager import ModelManager
from gemmacli.server.remote_media import RemoteMedia
from gemmacli.server.schema.limits import RequestLimits
from gemmacli.server.settings import ServerSettings


@dataclass
class Services:
    engine: Engine
    metrics: Metrics
    settings: ServerSettings
    embed_batcher: EmbedBatcher
    models: ModelManager  # what is loaded; loads, leases and unloads models
    remote_media: RemoteMedia | None = None  # None: data: URLs only

    @cached_property
    def media_limits(self) -> MediaLimits:
        return self.settings.media_limits()

    @cached_property
    def request_limits(self) -> RequestLimits:
        return self.settings.request_limits()
