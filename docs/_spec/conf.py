"""Sphinx configuration that builds the specification page alone.

``.ci/run`` copies ``../shared/spec/queue.rst`` (the page the library
implements) next to this file as ``index.rst`` and builds it with ``-W``, so a
name the page documents that the package lacks fails the build.
"""

project = "event-collector specification"
extensions = ["sphinx.ext.autodoc"]
root_doc = "index"
exclude_patterns = ["_build"]
autodoc_member_order = "bysource"
