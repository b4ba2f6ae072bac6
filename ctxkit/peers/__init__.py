"""Other tools' predictions set beside ctxkit's measurements (each an optional install of its own)."""
