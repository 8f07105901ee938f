"""Runnable jobs and the `autt` CLI.

They build configs, run the library's stages on Ray (or in-process) and summarise.
Nothing in `pipeline/` imports from here.
"""
