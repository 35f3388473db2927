"""R-Adapter: linear adapters with Adapter Dropping, EMA and re-scaling that merge into plain CLIP weights."""

from .checkpoint import AdapterMetadata, check_base_matches, load_adapter, save_adapter
from .config import RAdapterConfig
from .ema import AdapterEMA
from .layer import RAdapter
from .model import (
    UnsupportedModelError,
    adapter_state_dict,
    base_state_dict,
    count_parameters,
    inject_adapters,
    iter_adapters,
    load_adapter_state_dict,
    mark_only_adapters_trainable,
    merge_and_unload,
    merge_overlay,
    merged_state_dict,
    set_alpha,
    tower_transformers,
)

__all__ = [
    "AdapterEMA",
    "AdapterMetadata",
    "RAdapter",
    "RAdapterConfig",
    "UnsupportedModelError",
    "adapter_state_dict",
    "base_state_dict",
    "check_base_matches",
    "count_parameters",
    "inject_adapters",
    "iter_adapters",
    "load_adapter",
    "load_adapter_state_dict",
    "mark_only_adapters_trainable",
    "merge_and_unload",
    "merge_overlay",
    "merged_state_dict",
    "save_adapter",
    "set_alpha",
    "tower_transformers",
]
