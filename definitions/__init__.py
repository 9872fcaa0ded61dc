"""The programs bundled with workflow, one YAML file each (installed as ``workflow.definitions``)."""
