"""Typed service settings from `RADAPTER_*` environment variables and an optional TOML file."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

CONFIG_FILE_VARIABLE = "RADAPTER_CONFIG_FILE"
# Tenant adapters shipped with the service; each was trained on the embedded backbone.
DEMO_TENANTS_DIR = Path(__file__).with_name("demo_tenants")
MIN_KEY_LENGTH = 16
PLACEHOLDER_KEYS = {"changeme", "changethis", "secret", "password", "admin", "test"}


class Settings(BaseSettings):
    """Service configuration; every field is read from `RADAPTER_<FIELD>` or the TOML config file.

    Precedence, highest first: constructor arguments, environment variables, the TOML file named by
    `RADAPTER_CONFIG_FILE`, then the defaults below.
    """

    model_config = SettingsConfigDict(env_prefix="RADAPTER_", extra="forbid", validate_default=True)

    backbone_arch: str | None = Field(
        None,
        description="open_clip architecture name, e.g. ViT-B-16; default: the embedded radapter-emoji-vit",
    )
    backbone_pretrained: str | None = Field(
        None,
        description="open_clip pretrained tag (e.g. openai) or a local weights file; default for the "
        "embedded architecture: its shipped weights file",
    )
    model_config_dirs: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="extra directories of open_clip model-config JSON files (architecture name = file "
        "name without .json), registered before the backbone loads; in the environment a JSON list or "
        f"paths separated by {os.pathsep!r}",
    )
    device: str = Field("cpu", description="torch device: cpu, cuda or cuda:N")
    backend: Literal["torch", "onnxruntime"] = Field("torch", description="inference engine")
    precision: Literal["float32", "float16", "bfloat16"] = Field(
        "float32", description="torch backend weight and activation dtype; half precision needs CUDA"
    )
    adapter_store: Path = Field(
        default_factory=lambda: default_store_dir(),
        description="root of <tenant>/<version>/ adapter directories; default $RADAPTER_CACHE/store, "
        "or ~/.cache/radapter/store when RADAPTER_CACHE is unset",
    )
    onnx_cache_dir: Path | None = Field(
        None,
        description="where the onnxruntime backend writes per-tenant exports; default <adapter_store>/_onnx",
    )

    max_batch_size: int = Field(32, ge=1, le=4096, description="rows per encoder call")
    max_wait_ms: float = Field(5.0, ge=0, le=10_000, description="how long the worker waits to fill a batch")
    queue_size: int = Field(256, ge=1, description="pending encoder calls before requests get 429")
    request_timeout_s: float = Field(30.0, gt=0, description="per-request limit before 504")
    overlay_cache_bytes: int = Field(
        2 * 1024**3, ge=0, description="LRU bound for merged tenant overlays and their heads, in bytes"
    )

    max_body_bytes: int = Field(20 * 1024**2, ge=1024, description="largest accepted request body")
    max_images: int = Field(16, ge=1, description="images per request")
    max_image_pixels: int = Field(
        40_000_000, ge=1, description="width x height limit checked from the image header before decoding"
    )
    max_texts: int = Field(256, ge=1, description="texts (captions, labels, classes) per request")
    max_text_chars: int = Field(1000, ge=1, description="characters per text")
    max_gallery_items: int = Field(10_000, ge=1, description="items per tenant gallery")

    admin_api_key: SecretStr | None = Field(None, description="key for /v1/admin routes; unset disables them")
    tenant_api_keys: dict[str, SecretStr] = Field(
        default_factory=dict, description='tenant id -> API key, as JSON in the environment: {"acme": "..."}'
    )
    require_api_keys: bool = Field(
        True,
        description="false opens tenant routes without a key (local demos only); admin routes always need one",
    )
    demo_tenants: bool | None = Field(
        None,
        description="seed the adapter store with the shipped demo tenants at start and generate their "
        "keys; default: on exactly when the backbone is the embedded default",
    )
    demo_tenants_dir: Path = Field(
        default_factory=lambda: DEMO_TENANTS_DIR,
        description="source of the demo tenants: <tenant>/<version>/ adapter directories and an "
        "optional <tenant>/ACTIVE naming the version to serve",
    )
    watch_interval_s: float = Field(
        0.0,
        ge=0,
        description="poll the store's ACTIVE files this often (seconds) to follow other replicas; 0 = off",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources = [init_settings, env_settings]
        config_file = os.environ.get(CONFIG_FILE_VARIABLE)
        if config_file:
            path = Path(config_file)
            if not path.is_file():
                raise ValueError(
                    f"{CONFIG_FILE_VARIABLE}={config_file!r} does not exist; point it to a TOML file."
                )
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    @field_validator("backbone_arch", "backbone_pretrained", mode="before")
    @classmethod
    def _empty_as_unset(cls, value: object) -> object:
        # `RADAPTER_BACKBONE_ARCH=` in an env file or compose service means "not set", not a name.
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("model_config_dirs", mode="before")
    @classmethod
    def _split_config_dirs(cls, value: object) -> object:
        if isinstance(value, str):
            if value.lstrip().startswith("["):
                return json.loads(value)
            return [part for part in value.split(os.pathsep) if part]
        return value

    @field_validator("model_config_dirs")
    @classmethod
    def _check_config_dirs(cls, directories: list[Path]) -> list[Path]:
        for directory in directories:
            if not directory.is_dir():
                raise ValueError(
                    f"RADAPTER_MODEL_CONFIG_DIRS: {str(directory)!r} is not a directory; "
                    "list directories that contain open_clip model-config JSON files."
                )
            if not any(directory.glob("*.json")):
                raise ValueError(
                    f"RADAPTER_MODEL_CONFIG_DIRS: {str(directory)!r} contains no .json model configs; "
                    "each architecture needs a <name>.json file as in open_clip's model_configs directory."
                )
        return directories

    @field_validator("admin_api_key")
    @classmethod
    def _check_admin_key(cls, key: SecretStr | None) -> SecretStr | None:
        if key is not None:
            check_key_strength("RADAPTER_ADMIN_API_KEY", key)
        return key

    @field_validator("tenant_api_keys")
    @classmethod
    def _check_tenant_keys(cls, keys: dict[str, SecretStr]) -> dict[str, SecretStr]:
        from .errors import APIError
        from .tenants import validate_tenant_id

        for tenant, key in keys.items():
            try:
                validate_tenant_id(tenant)
            except APIError as error:
                raise ValueError(f"RADAPTER_TENANT_API_KEYS: {error.message}") from None
            check_key_strength(f"RADAPTER_TENANT_API_KEYS[{tenant!r}]", key)
        return keys

    @model_validator(mode="after")
    def _default_to_embedded_backbone(self) -> Settings:
        from training import embedded

        if self.backbone_arch is None:
            self.backbone_arch = embedded.ARCHITECTURE
        if self.backbone_arch == embedded.ARCHITECTURE and self.backbone_pretrained is None:
            self.backbone_pretrained = str(embedded.WEIGHTS_PATH)
        return self

    @model_validator(mode="after")
    def _check_precision(self) -> Settings:
        if self.precision != "float32" and not self.device.startswith("cuda"):
            raise ValueError(
                f"RADAPTER_PRECISION={self.precision} needs a CUDA device, but RADAPTER_DEVICE={self.device}; "
                "use float32 on CPU."
            )
        if self.precision != "float32" and self.backend != "torch":
            raise ValueError(
                "RADAPTER_PRECISION applies to the torch backend only; use float32 with onnxruntime."
            )
        return self

    @property
    def embedded_backbone(self) -> bool:
        """Whether the backbone is the embedded architecture with its shipped weights."""
        from training import embedded

        if self.backbone_arch != embedded.ARCHITECTURE or self.backbone_pretrained is None:
            return False
        return Path(self.backbone_pretrained).resolve() == embedded.WEIGHTS_PATH.resolve()

    @property
    def demo_mode(self) -> bool:
        """Whether demo tenants are seeded: the explicit setting, else on for the embedded backbone."""
        return self.embedded_backbone if self.demo_tenants is None else self.demo_tenants

    @property
    def onnx_dir(self) -> Path:
        """Directory for per-tenant ONNX exports."""
        return self.onnx_cache_dir or self.adapter_store / "_onnx"


def default_store_dir() -> Path:
    """Return `store` under the cache folder that `radapter data` also uses."""
    from training.data.sources import default_cache_dir

    return default_cache_dir() / "store"


def check_key_strength(variable: str, key: SecretStr) -> None:
    """Raise ValueError naming `variable` when the key is a known placeholder or too short."""
    value = key.get_secret_value()
    # The message names the variable but never echoes the key itself.
    if value.lower() in PLACEHOLDER_KEYS or len(value) < MIN_KEY_LENGTH:
        raise ValueError(
            f"{variable} is a placeholder or shorter than {MIN_KEY_LENGTH} characters; "
            "generate one with `python -c 'import secrets; print(secrets.token_urlsafe(32))'`."
        )
