"""Sphinx configuration of the event-collector documentation."""

from event_collector import __version__

project = "event-collector"
author = "event-collector developers"
copyright = "event-collector developers"
release = __version__
version = __version__

extensions = ["sphinx.ext.autodoc"]
root_doc = "index"
exclude_patterns = ["_build", "_spec"]
templates_path: list[str] = []

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True

html_theme = "furo"
html_title = f"event-collector {release}"
html_static_path = ["_static"]
