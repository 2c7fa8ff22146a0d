"""Source presets: how weaver variable names are computed from NanoAOD collections (YAML, data only)."""
