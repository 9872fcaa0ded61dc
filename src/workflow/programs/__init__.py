"""Program definitions as code: the frozen model, the YAML reader and its checks, the catalog of
bundled and extra programs, and the diagrams drawn from them.

The bundled YAML files themselves are data, installed as ``workflow.definitions`` from the
top-level ``definitions/`` folder; this package reads them.
"""
