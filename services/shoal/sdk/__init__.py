"""The pieces of the public SDK; users import them from `shoal` (see its docstring)."""
