"""The fast unit layer: real host classes on fake kernels and a temp-file store (a package, so
its conftest is ``unit.conftest`` and never shadows the ``conftest`` the end-to-end tests import)."""
