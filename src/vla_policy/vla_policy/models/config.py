"""Typed configuration of a VLA model (backbone + head + chunking), JSON round-trippable.

Layout follows LeRobot's ``PreTrainedConfig`` / RoboVLMs configs: one dataclass per concern.
``from_dict`` is strict: an unknown key raises ``ValueError`` naming the key, so a typo in a
config file or a checkpoint from a newer version never silently falls back to a default.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

__all__ = ['BackboneConfig', 'HeadConfig', 'ChunkConfig', 'VLAConfig']


@dataclass
class BackboneConfig:
    """Vision-language trunk: images (B, T, 3, S, S) + tokens (B, L) [+ state] -> feature (B, D).

    Attributes (film_cnn):
        channels: conv channels per block.
        strides: stride of each block's first conv (default 2 each).
        word_dim: instruction word-embedding size (FiLM conditioning input).
        feature_dim: output feature size D.
        vocab_size: tokenizer vocabulary size; filled in from the tokenizer at training time.
    Attributes (hf_vlm):
        hf_arch: ``'idefics3'`` (SmolVLM architecture) or ``'paligemma'``.
        pretrained: hub id / local path for ``from_pretrained``; ``None`` builds the tiny config below.
        patch_size, vision_hidden, vision_layers, text_hidden, text_layers, num_heads, scale_factor:
            tiny from-scratch architecture.
        image_feature_scale: initial multiplier on projected image features (learned).
        hf_config: full HF config dict, filled in at build time so a checkpoint rebuilds offline.
        freeze_vision: do not train the vision encoder (typical with a pretrained VLM).
    """

    name: str = 'film_cnn'
    image_size: int = 64          # 64 px: enough for coloured-object tasks, cheap on 2 CPU cores
    use_state: bool = False       # film_cnn/hf_vlm ignore state; the head consumes it instead
    # --- film_cnn (RT-1 FiLM-EfficientNet idea, scaled down) ---
    channels: Tuple[int, ...] = (32, 64, 64)   # 3 stride-2 blocks: 64 px -> 8x8 keypoint maps, ~0.2-0.5 M params
    strides: Tuple[int, ...] = ()  # per block; () = all 2. (2, 2, 1) keeps 16x16 maps at 64 px: finer keypoints
    word_dim: int = 64            # small: vocab of a few dozen words
    feature_dim: int = 256        # width of the post-keypoint MLP = feature D
    vocab_size: int = 0           # 0 = not yet known (set from the tokenizer before building)
    # --- hf_vlm ---
    hf_arch: str = 'idefics3'     # SmolVLM architecture is the smallest maintained VLM family
    pretrained: Optional[str] = None   # None = tiny random config (tests, from-scratch experiments)
    patch_size: int = 8           # 64/8 = 8x8 patches -> 16 tokens after Idefics3 pixel shuffle
    vision_hidden: int = 128      # tiny: trains on CPU
    vision_layers: int = 2
    text_hidden: int = 128
    text_layers: int = 2
    num_heads: int = 4            # head dim 32
    scale_factor: int = 2         # Idefics3 pixel-shuffle factor (SmolVLM default)
    image_feature_scale: float = 0.05  # at init image features are ~20x larger than token embeddings
    hf_config: Optional[Dict[str, Any]] = None
    freeze_vision: bool = False   # from-scratch vision must train; set True for pretrained fine-tuning

    def __post_init__(self) -> None:
        self.channels = tuple(int(c) for c in self.channels)
        if self.image_size < 8:
            raise ValueError(f'backbone.image_size must be >= 8, got {self.image_size}')
        if self.name == 'hf_vlm':
            if self.hf_arch not in ('idefics3', 'paligemma'):
                raise ValueError(f"backbone.hf_arch must be 'idefics3' or 'paligemma', got {self.hf_arch!r}")
            if self.pretrained is None and self.hf_config is None:
                if self.image_size % self.patch_size:
                    raise ValueError(f'backbone.image_size ({self.image_size}) must be divisible by '
                                     f'backbone.patch_size ({self.patch_size})')
                n = self.image_size // self.patch_size
                if self.hf_arch == 'idefics3' and n % self.scale_factor:
                    raise ValueError(f'backbone: patches per side ({n}) must be divisible by '
                                     f'scale_factor ({self.scale_factor}) for the Idefics3 pixel shuffle')
                for k in ('vision_hidden', 'text_hidden'):
                    if getattr(self, k) % self.num_heads:
                        raise ValueError(f'backbone.{k} ({getattr(self, k)}) must be divisible by '
                                         f'num_heads ({self.num_heads})')
        if self.name == 'film_cnn' and not self.channels:
            raise ValueError('backbone.channels must be non-empty for film_cnn')
        self.strides = tuple(int(s) for s in self.strides)
        if self.strides and (len(self.strides) != len(self.channels) or min(self.strides) < 1):
            raise ValueError(f'backbone.strides {self.strides} must give one stride >= 1 per channel entry '
                             f'{self.channels}')


@dataclass
class HeadConfig:
    """Action head: feature (B, D) [+ state (B, S)] -> chunk (B, H, A).

    Attributes:
        name: registry key (``'mlp'`` regression, ``'flow'`` flow matching).
        hidden: hidden width.
        n_layers: number of hidden layers (``flow``: residual blocks).
        loss: ``'l1'`` (ACT / LeRobot default for action chunks) or ``'mse'``; ``mlp`` only (``flow``
            always regresses its velocity with the squared error, the flow-matching objective).
        use_state: concatenate the newest normalized state to the feature.
        dropout: dropout between hidden layers.
    Attributes (flow, pi0: Black et al. 2024, arXiv 2410.24164, appendix B):
        num_steps: Euler integration steps when sampling (pi0: 10).
        time_dim: width of the sinusoidal flow-time embedding (even).
        time_alpha, time_beta: training times ``tau = time_s * (1 - b)``, ``b ~ Beta(alpha, beta)``.
        time_s: largest training time ``s`` (pi0: 0.999).
    """

    name: str = 'mlp'
    hidden: int = 256             # ~2x feature width, small enough for CPU
    n_layers: int = 2             # 2 hidden layers as in the brief / Octo's MLP head
    loss: str = 'l1'              # L1 is robust to multimodal demos (ACT, Zhao et al. 2023)
    use_state: bool = True        # proprioception helps absolute-position targets
    dropout: float = 0.0          # tiny datasets: rely on augmentation instead
    # --- flow (pi0 flow matching) ---
    num_steps: int = 10           # pi0's 10 Euler steps: 10 small head passes, the backbone runs once
    time_dim: int = 64            # sincos embedding; openpi embeds tau at the action width, 64 suffices for a scalar
    time_alpha: float = 1.5       # pi0: Beta(1.5, 1) over (s - tau) / s emphasises noisy (low) times
    time_beta: float = 1.0
    time_s: float = 0.999         # pi0's cut-off s: times above s are never trained

    def __post_init__(self) -> None:
        if self.loss not in ('l1', 'mse'):
            raise ValueError(f"head.loss must be 'l1' or 'mse', got {self.loss!r}")
        if self.hidden < 1 or self.n_layers < 1:
            raise ValueError(f'head.hidden and head.n_layers must be >= 1, got {self.hidden}, {self.n_layers}')
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f'head.dropout must be in [0, 1), got {self.dropout}')
        if int(self.num_steps) != self.num_steps or self.num_steps < 1:
            raise ValueError(f'head.num_steps must be an integer >= 1, got {self.num_steps}')
        self.num_steps = int(self.num_steps)
        if self.time_dim < 2 or self.time_dim % 2:
            raise ValueError(f'head.time_dim must be even and >= 2, got {self.time_dim}')
        if not (self.time_alpha > 0 and self.time_beta > 0):
            raise ValueError(f'head.time_alpha and head.time_beta must be > 0, got {self.time_alpha}, '
                             f'{self.time_beta}')
        if not 0.0 < self.time_s <= 1.0:
            raise ValueError(f'head.time_s must be in (0, 1], got {self.time_s}')


@dataclass
class ChunkConfig:
    """Temporal layout (LeRobot naming).

    Attributes:
        n_obs_steps: observations fed per inference (history length).
        chunk_size: actions predicted per inference (H).
        n_action_steps: actions executed before re-planning (<= chunk_size).
    """

    n_obs_steps: int = 1          # single frame: RT-1/ACT work well; history optional
    chunk_size: int = 8           # 0.8 s at 10 Hz: smooths, ACT-style chunking
    n_action_steps: int = 4       # re-plan at 2.5 Hz: reactive yet smooth

    def __post_init__(self) -> None:
        if self.n_obs_steps < 1:
            raise ValueError(f'chunk.n_obs_steps must be >= 1, got {self.n_obs_steps}')
        if self.chunk_size < 1:
            raise ValueError(f'chunk.chunk_size must be >= 1, got {self.chunk_size}')
        if not 1 <= self.n_action_steps <= self.chunk_size:
            raise ValueError(f'chunk.n_action_steps ({self.n_action_steps}) must be in '
                             f'[1, chunk_size={self.chunk_size}]')


@dataclass
class VLAConfig:
    """Whole-model configuration.

    Attributes:
        backbone, head, chunk: sub-configs.
        action_dim: A, action vector size (embodiment DoF).
        state_dim: S, proprio vector size (0 = no state).
        embodiment: registry name (``robot_drivers.embodiment.get_embodiment``).
        camera_names: ``Observation.images`` keys fed to the model, in order.
        max_tokens: instruction length L after padding/truncation.
        delta_action_dims: action dims predicted relative to the newest joint positions
            (openpi DeltaActions, see ``vla_policy.transforms``); needs state_dim == action_dim.
        binary_action_dims: action dims executed as open/closed (RT-1 / RoboVLMs treat the gripper
            as a binary action): the prediction snaps to the nearer of the embodiment joint's
            lower/upper limit. Stops a half-closed gripper from drifting the proprio input.
    """

    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    chunk: ChunkConfig = field(default_factory=ChunkConfig)
    action_dim: int = 8           # Franka Panda: 7 arm joints + 1 finger
    state_dim: int = 8            # measured joint positions, same joints
    embodiment: str = 'franka_panda'
    camera_names: Tuple[str, ...] = ('front',)  # matches vla_policy.runtime.RuntimeConfig.camera default
    max_tokens: int = 16          # instructions are short commands ("pick the red cube")
    delta_action_dims: Tuple[int, ...] = ()   # () = absolute targets; Franka configs use the 7 arm joints
    binary_action_dims: Tuple[int, ...] = ()  # () = continuous; Franka configs use the finger (7)

    def __post_init__(self) -> None:
        for k, cls in (('backbone', BackboneConfig), ('head', HeadConfig), ('chunk', ChunkConfig)):
            v = getattr(self, k)
            if isinstance(v, dict):
                setattr(self, k, _strict(cls, v, k))
            elif not isinstance(v, cls):
                raise TypeError(f'VLAConfig.{k} must be {cls.__name__}, got {type(v).__name__}')
        self.camera_names = tuple(self.camera_names)
        if self.action_dim < 1:
            raise ValueError(f'action_dim must be >= 1, got {self.action_dim}')
        if self.state_dim < 0:
            raise ValueError(f'state_dim must be >= 0, got {self.state_dim}')
        if not self.camera_names:
            raise ValueError('camera_names must name at least one camera')
        if len(set(self.camera_names)) != len(self.camera_names):
            raise ValueError(f'camera_names has duplicates: {self.camera_names}')
        if self.max_tokens < 1:
            raise ValueError(f'max_tokens must be >= 1, got {self.max_tokens}')
        self.delta_action_dims = tuple(int(d) for d in self.delta_action_dims)
        if self.delta_action_dims:
            if self.state_dim != self.action_dim:
                raise ValueError(f'delta_action_dims needs state_dim == action_dim, got {self.state_dim} '
                                 f'and {self.action_dim}')
            bad = [d for d in self.delta_action_dims if not 0 <= d < self.action_dim]
            if bad or len(set(self.delta_action_dims)) != len(self.delta_action_dims):
                raise ValueError(f'delta_action_dims {self.delta_action_dims} must be distinct indices '
                                 f'in [0, action_dim={self.action_dim})')
        self.binary_action_dims = tuple(int(d) for d in self.binary_action_dims)
        bad = [d for d in self.binary_action_dims if not 0 <= d < self.action_dim]
        if bad or set(self.binary_action_dims) & set(self.delta_action_dims):
            raise ValueError(f'binary_action_dims {self.binary_action_dims} must be indices in [0, action_dim='
                             f'{self.action_dim}) and not in delta_action_dims {self.delta_action_dims}')
        if self.state_dim == 0 and (self.head.use_state or self.backbone.use_state):
            raise ValueError('state_dim is 0 but head.use_state/backbone.use_state is set')

    @property
    def n_images(self) -> int:
        """Images per sample T_img = n_obs_steps * len(camera_names) (time-major, camera-minor)."""
        return self.chunk.n_obs_steps * len(self.camera_names)

    def to_dict(self) -> Dict[str, Any]:
        """JSON-serialisable dict (tuples become lists)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> 'VLAConfig':
        """Strict inverse of :meth:`to_dict`; raises ValueError naming an unknown key."""
        return _strict(cls, d, 'config')


def _strict(cls, d: Dict[str, Any], where: str):
    if not isinstance(d, dict):
        raise TypeError(f'{where} must be a dict, got {type(d).__name__}')
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f'unknown key(s) {unknown} in {where} ({cls.__name__}); known: {sorted(names)}')
    return cls(**d)
