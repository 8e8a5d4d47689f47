"""Built-in backbones; importing this package registers them (add a module + import for a new family)."""
from . import film_cnn, hf_vlm  # noqa: F401
from . import octo  # noqa: F401
