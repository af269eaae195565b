"""Orchestrator: the CLI and the Ray driver that turns a sweep into jobs on GPU-pinned actors."""
