"""The public API is exactly what workflow.__all__ lists, kept sorted and importable."""

import workflow


def test_all_is_sorted() -> None:
    """__all__ is sorted, so additions are reviewed in one obvious place."""
    assert workflow.__all__ == sorted(workflow.__all__)


def test_all_names_exist() -> None:
    """Every name in __all__ is importable from the package."""
    for name in workflow.__all__:
        assert hasattr(workflow, name), name


def test_public_members_are_exported() -> None:
    """Every public name the package serves is listed in __all__, and nothing else is.

    Names are imported on first use, so ``vars(workflow)`` holds none of them when this test
    runs alone: it asks for every name the package serves first, then looks at what it holds.
    """
    served = set(workflow._LAZY)
    for name in served:
        getattr(workflow, name)
    public = {
        name
        for name, value in vars(workflow).items()
        if not name.startswith("_")
        and getattr(value, "__module__", "").startswith("workflow")
        and callable(value)
    }
    assert served <= public
    assert public == set(workflow.__all__) - {"__version__"}


def test_exceptions_share_one_root() -> None:
    """Every exported exception derives from WorkflowError."""
    for name in workflow.__all__:
        value = getattr(workflow, name)
        if isinstance(value, type) and issubclass(value, Exception):
            assert issubclass(value, workflow.WorkflowError), name


def test_schema_revision_is_migrations_head() -> None:
    """The revision the code expects is the newest shipped migration."""
    from workflow.storage import migrations
    from workflow.storage.store import SCHEMA_REVISION

    assert migrations.head() == SCHEMA_REVISION
