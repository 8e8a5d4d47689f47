"""Built-in action heads; importing this package registers them (add a module + import for a new family)."""
from . import flow, mlp  # noqa: F401
