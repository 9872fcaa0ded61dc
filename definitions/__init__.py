"""The programs bundled with workflow, one YAML file each.

Installed as the data package ``workflow.definitions``.
"""
