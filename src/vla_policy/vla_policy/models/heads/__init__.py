"""Built-in action heads; importing this package registers them (add a module + import for a new family).

Each head class declares ``sequence_input``: False -> ``forward(feature (B, D), ...)``; True (``lstm``,
``gpt``) -> ``forward(feature (B, T, D) history oldest first, or (B, D) as T = 1, ...)``; and
``samples``: True when ``forward`` draws noise (``flow``, ``diffusion``: ``noise=`` / ``generator=``).
"""
from . import diffusion, flow, gpt, lstm, mlp  # noqa: F401
