"""Multi-tenant inference service for open_clip backbones with per-tenant R-Adapters."""
