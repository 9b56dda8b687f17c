"""The paper's sources (template, bibliography, claims, captions), shipped as package data.

Installed as ``echomtl.paper``; the workflow finds them with ``importlib.resources``.
"""
