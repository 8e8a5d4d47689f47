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
__all__ += ['DiscreteConfig', 'STRUCTURES']  # --- structures ---


# --- hf_vlm backbones ---
# backbone.hf_arch values (one adapter each in models/backbones/hf_vlm/; 'smolvlm' = 'idefics3').
HF_ARCHS = ('idefics3', 'smolvlm', 'paligemma', 'qwen2_vl', 'qwen2_5_vl', 'qwen3_vl',
            'florence2', 'kosmos2', 'llava', 'llava_next', 'llava_onevision')
HF_FREEZE_MODES = ('none', 'vision', 'all')
__all__ += ['HF_ARCHS', 'HF_FREEZE_MODES']
# --- end hf_vlm backbones ---


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
        hf_arch: one of ``HF_ARCHS`` (``'idefics3'`` = SmolVLM architecture, ``'paligemma'``, Qwen-VL,
            Florence-2, Kosmos-2, LLaVA families; see ``models/backbones/hf_vlm/``).
        pretrained: hub id / local path for ``from_pretrained``; ``None`` builds the tiny config below.
        patch_size, vision_hidden, vision_layers, text_hidden, text_layers, num_heads, scale_factor:
            tiny from-scratch architecture.
        image_feature_scale: initial multiplier on projected image features (learned).
        hf_config: full HF config dict, filled in at build time so a checkpoint rebuilds offline.
        freeze_vision: legacy flag, ``True`` = ``freeze: 'vision'``.
        freeze: ``'none'``, ``'vision'`` (vision tower + projector) or ``'all'`` (every HF weight; the
            learned ``<act>`` embedding and image scale stay trainable).
        freeze_text_layers: the first N language-model decoder layers are frozen.
        lora_r, lora_alpha, lora_dropout, lora_targets: LoRA adapters (peft ``LoraConfig``; ``lora_r`` 0 =
            off). With LoRA every HF weight is frozen except the adapters (Hu et al. 2021).
        scale_factor: also the Qwen-VL spatial merge size of a tiny config.
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
    # --- hf_vlm backbones: freeze / LoRA (models/backbones/hf_vlm/base.py) ---
    freeze: str = 'none'          # 'none' | 'vision' | 'all'; legacy freeze_vision=True means 'vision'
    freeze_text_layers: int = 0   # first N language-model decoder layers frozen (0 = none)
    lora_r: int = 0               # LoRA rank (peft); 0 = off (full fine-tuning, today's behaviour)
    lora_alpha: float = 16.0      # LoRA scaling alpha / r (peft default 8; 16 = 2r at r 8, the common choice)
    lora_dropout: float = 0.0
    lora_targets: Tuple[str, ...] = ('q_proj', 'k_proj', 'v_proj', 'o_proj')  # peft target_modules (attention)
    # --- end hf_vlm backbones ---
    # --- octo (Octo-style trunk, arXiv 2405.12213, scaled down; models/backbones/octo.py) ---
    octo_dim: int = 128           # token width D (Octo-Small: 384); 128 trains on one CPU thread
    octo_layers: int = 2          # transformer blocks (Octo-Small: 12)
    octo_heads: int = 4           # head dim 32
    octo_mlp_ratio: float = 2.0   # MLP width / D (Octo: 4); 2 halves the MLP cost on CPU
    octo_dropout: float = 0.0     # attention dropout
    octo_stem_channels: Tuple[int, ...] = (32, 64, 64)   # conv stem: 64 px -> 8x8 = 64 patch tokens per image
    octo_stem_strides: Tuple[int, ...] = ()  # per stem block; () = all 2
    octo_stem_film: bool = True   # FiLM the stem on the instruction (RT-1 / Octo FiLM variant)
    octo_pos: str = 'sincos'      # 'sincos' (fixed 2-D) or 'learned' patch position embeddings
    octo_keypoints: int = 0       # spatial-softmax keypoint tokens per image (0 = none)
    octo_patch_tokens: bool = True   # conv-stem cells as tokens; False = keypoint tokens only
    octo_keypoint_mode: str = 'tokens'   # 'tokens': one per keypoint; 'flat': one token of all K per image
    octo_kp_freqs: int = 0        # sin/cos frequencies added to each keypoint's (x, y); 0 = raw coordinates
    octo_state_token: bool = False   # add a proprio token per observation step (Octo's optional proprio)
    octo_readouts: int = 1        # learned readout tokens per step (Octo: 1 per action head)
    octo_readout_pool: str = 'mean'   # 'mean' (Octo) or 'concat' (B, R*D): R separate attention pools
    octo_obs_skip: bool = False   # also output the mean image token entering the trunk (a skip past it)
    # --- end octo ---

    def __post_init__(self) -> None:
        self.channels = tuple(int(c) for c in self.channels)
        # sequences are tuples whatever the backbone, so a config equals itself after a JSON round trip
        self.octo_stem_channels = tuple(int(c) for c in self.octo_stem_channels)
        self.octo_stem_strides = tuple(int(c) for c in self.octo_stem_strides)
        self.lora_targets = (self.lora_targets,) if isinstance(self.lora_targets, str) else \
            tuple(str(t) for t in self.lora_targets)
        if self.image_size < 8:
            raise ValueError(f'backbone.image_size must be >= 8, got {self.image_size}')
        if self.name == 'hf_vlm':
            # --- hf_vlm backbones ---
            if self.hf_arch not in HF_ARCHS:
                raise ValueError(f'unknown backbone.hf_arch {self.hf_arch!r}; valid: {list(HF_ARCHS)}')
            if self.freeze not in HF_FREEZE_MODES:
                raise ValueError(f'backbone.freeze must be one of {list(HF_FREEZE_MODES)}, got {self.freeze!r}')
            if self.freeze_vision and self.freeze == 'none':
                self.freeze = 'vision'  # legacy flag (checkpoints before the freeze field)
            self.lora_targets = (self.lora_targets,) if isinstance(self.lora_targets, str) else \
                tuple(str(t) for t in self.lora_targets)
            for k in ('freeze_text_layers', 'lora_r'):
                v = getattr(self, k)
                if isinstance(v, bool) or int(v) != v or v < 0:
                    raise ValueError(f'backbone.{k} must be an integer >= 0, got {v!r}')
                setattr(self, k, int(v))
            if self.lora_r and (not self.lora_targets or self.lora_alpha <= 0 or not 0.0 <= self.lora_dropout < 1.0):
                raise ValueError(f'backbone LoRA (lora_r={self.lora_r}) needs non-empty lora_targets (got '
                                 f'{list(self.lora_targets)}), lora_alpha > 0 (got {self.lora_alpha}) and '
                                 f'lora_dropout in [0, 1) (got {self.lora_dropout})')
            # --- end hf_vlm backbones ---
            if self.pretrained is None and self.hf_config is None:
                if self.image_size % self.patch_size:
                    raise ValueError(f'backbone.image_size ({self.image_size}) must be divisible by '
                                     f'backbone.patch_size ({self.patch_size})')
                n = self.image_size // self.patch_size
                if self.hf_arch in ('idefics3', 'smolvlm') and n % self.scale_factor:
                    raise ValueError(f'backbone: patches per side ({n}) must be divisible by '
                                     f'scale_factor ({self.scale_factor}) for the Idefics3 pixel shuffle')
                if self.hf_arch in ('qwen2_vl', 'qwen2_5_vl', 'qwen3_vl') and n % self.scale_factor:
                    raise ValueError(f'backbone: patches per side ({n}) must be divisible by scale_factor '
                                     f'({self.scale_factor}), the Qwen-VL spatial merge size')
                for k in ('vision_hidden', 'text_hidden'):
                    if getattr(self, k) % self.num_heads:
                        raise ValueError(f'backbone.{k} ({getattr(self, k)}) must be divisible by '
                                         f'num_heads ({self.num_heads})')
        # --- octo ---
        if self.name == 'octo':
            self.octo_stem_channels = tuple(int(c) for c in self.octo_stem_channels)
            self.octo_stem_strides = tuple(int(c) for c in self.octo_stem_strides)
            if not self.octo_stem_channels or (self.octo_stem_strides and (
                    len(self.octo_stem_strides) != len(self.octo_stem_channels) or min(self.octo_stem_strides) < 1)):
                raise ValueError(f'backbone.octo_stem_channels {self.octo_stem_channels} must be non-empty and '
                                 f'octo_stem_strides {self.octo_stem_strides} empty or one stride >= 1 per channel')
            if self.octo_dim < 4 or self.octo_dim % 4 or self.octo_dim % self.octo_heads:
                raise ValueError(f'backbone.octo_dim ({self.octo_dim}) must be a multiple of 4 and of '
                                 f'octo_heads ({self.octo_heads})')
            if self.octo_kp_freqs < 0:
                raise ValueError(f'backbone.octo_kp_freqs must be >= 0, got {self.octo_kp_freqs}')
            if self.octo_keypoint_mode not in ('tokens', 'flat'):
                raise ValueError(f"backbone.octo_keypoint_mode must be 'tokens' or 'flat', got {self.octo_keypoint_mode!r}")
            if self.octo_readout_pool not in ('mean', 'concat'):
                raise ValueError(f"backbone.octo_readout_pool must be 'mean' or 'concat', got {self.octo_readout_pool!r}")
            if self.octo_pos not in ('sincos', 'learned'):
                raise ValueError(f"backbone.octo_pos must be 'sincos' or 'learned', got {self.octo_pos!r}")
            if self.octo_layers < 1 or self.octo_readouts < 1 or self.octo_keypoints < 0 or self.octo_mlp_ratio <= 0:
                raise ValueError('backbone: octo_layers and octo_readouts must be >= 1, octo_keypoints >= 0, '
                                 'octo_mlp_ratio > 0')
        # --- end octo ---
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
        name: registry key (``'mlp'`` regression, ``'flow'`` flow matching, ``'lstm'`` / ``'gpt'``
            history models, ``'diffusion'`` DDPM/DDIM).
        hidden: hidden width.
        n_layers: number of hidden layers (``flow``/``diffusion``: residual blocks; ``lstm``: LSTM layers;
            ``gpt``: transformer blocks).
        loss: ``'l1'`` (ACT / LeRobot default for action chunks) or ``'mse'``; ``mlp``/``lstm``/``gpt`` only
            (``flow`` regresses its velocity and ``diffusion`` its noise with the squared error).
        use_state: concatenate the newest normalized state to the feature.
        dropout: dropout between hidden layers.
    Attributes (flow, pi0: Black et al. 2024, arXiv 2410.24164, appendix B):
        num_steps: Euler integration steps when sampling (pi0: 10).
        time_dim: width of the sinusoidal flow-time embedding (even).
        time_alpha, time_beta: training times ``tau = time_s * (1 - b)``, ``b ~ Beta(alpha, beta)``.
        time_s: largest training time ``s`` (pi0: 0.999).
    Attributes (gripper loss; ``mlp``, ``lstm``, ``gpt``, see ``heads/losses.py``):
        gripper_loss: ``'same'`` (binary dims regressed like the others) or ``'bce'`` (BCE-with-logits
            on ``VLAConfig.binary_action_dims``, target = normalized action > 0; the head then outputs
            ``tanh(logit / 2)`` on those dims).
        gripper_loss_weight: weight of the binary dims in the chunk loss (>= 0).
    Attributes (``lstm`` / ``gpt`` history heads, RoboVLMs 2024; ``n_layers`` = LSTM / transformer layers):
        num_heads: attention heads (``gpt``, ``diffusion`` with ``dit``); must divide ``hidden``.
        max_history: ``gpt`` learned positions; a longer history (``chunk.n_obs_steps``) is an error.
    Attributes (``diffusion``: DDPM training, Ho et al. 2020; DDIM sampling, Song et al. 2021):
        num_train_timesteps: DDPM steps T.
        num_inference_steps: DDIM steps at sampling (<= T).
        time_dim: (shared with ``flow``) width of the sinusoidal timestep embedding.
        beta_schedule: ``'linear'``, ``'scaled_linear'`` or ``'squaredcos_cap_v2'`` (diffusers names).
        clip_sample: clip the predicted clean chunk to [-1, 1] in each scheduler step.
        diffusion_net: ``'mlp'`` (Octo's conditional residual MLP) or ``'dit'`` (adaLN-zero DiT,
            Peebles & Xie 2023, GR00T's action head).
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
    # --- heads: gripper loss, lstm / gpt / diffusion (see heads/losses.py, lstm.py, gpt.py, diffusion.py) ---
    gripper_loss: str = 'same'    # 'same' = L1/MSE like the other dims: the behaviour of older checkpoints
    gripper_loss_weight: float = 1.0  # 1.0 = no reweighting, again the pre-existing loss
    num_heads: int = 4            # gpt / diffusion dit attention heads: head dim 64 at hidden 256
    max_history: int = 16         # gpt positions: RoboVLMs' window_size 16 on CALVIN; >= chunk.n_obs_steps
    num_train_timesteps: int = 100    # DDPM steps T: Diffusion Policy (Chi et al. 2023) trains with 100
    num_inference_steps: int = 10     # DDIM steps when sampling: Diffusion Policy's real-robot setting
    beta_schedule: str = 'squaredcos_cap_v2'  # cosine schedule (Nichol & Dhariwal 2021), Diffusion Policy/Octo
    clip_sample: bool = True      # DDPM/DDIM clip x0 to [-1, 1] = the normalized q01..q99 action range
    diffusion_net: str = 'mlp'    # Octo's residual MLP: cheapest on CPU; 'dit' = GR00T-style DiT

    def __post_init__(self) -> None:
        # --- heads: gripper loss, lstm / gpt / diffusion ---
        if self.gripper_loss not in ('same', 'bce'):
            raise ValueError(f"head.gripper_loss must be 'same' or 'bce', got {self.gripper_loss!r}")
        if self.gripper_loss == 'bce' and self.name in ('flow', 'diffusion'):
            raise ValueError(f"head.gripper_loss 'bce' applies to regression heads ('mlp', 'lstm', 'gpt'); "
                             f"the generative head {self.name!r} needs 'same'")
        if not self.gripper_loss_weight >= 0.0:
            raise ValueError(f'head.gripper_loss_weight must be >= 0, got {self.gripper_loss_weight}')
        for k in ('num_heads', 'max_history', 'num_train_timesteps', 'num_inference_steps'):
            v = getattr(self, k)
            if isinstance(v, bool) or int(v) != v or v < 1:
                raise ValueError(f'head.{k} must be an integer >= 1, got {v!r}')
            setattr(self, k, int(v))
        if self.num_inference_steps > self.num_train_timesteps:
            raise ValueError(f'head.num_inference_steps ({self.num_inference_steps}) must be <= '
                             f'head.num_train_timesteps ({self.num_train_timesteps}) for DDIM')
        if self.beta_schedule not in ('linear', 'scaled_linear', 'squaredcos_cap_v2'):
            raise ValueError(f"head.beta_schedule must be 'linear', 'scaled_linear' or 'squaredcos_cap_v2', "
                             f"got {self.beta_schedule!r}")
        if self.diffusion_net not in ('mlp', 'dit'):
            raise ValueError(f"head.diffusion_net must be 'mlp' or 'dit', got {self.diffusion_net!r}")
        if (self.name == 'gpt' or (self.name == 'diffusion' and self.diffusion_net == 'dit')) \
                and self.hidden % self.num_heads:
            raise ValueError(f'head.hidden ({self.hidden}) must be divisible by head.num_heads ({self.num_heads}) '
                             f'for {self.name!r}')
        # --- end heads ---
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


# --- structures ---
# RoboVLMs (Li et al. 2024, "Towards Generalist Robot Policies: What Matters in Building
# Vision-Language-Action Models", arXiv 2412.14058) taxonomy of how a VLM becomes a policy.
STRUCTURES = ('one_step_continuous', 'one_step_discrete', 'interleaved', 'policy_head')


@dataclass
class DiscreteConfig:
    """Actions as language tokens (structure ``one_step_discrete``; RT-2, Brohan et al. 2023; OpenVLA,
    Kim et al. 2024). See :mod:`vla_policy.models.action_tokenizer`.

    Attributes:
        n_bins: uniform bins over the normalized range [-1, 1] (= q01..q99 after quantile
            normalization); RT-2 / OpenVLA use 256.
        vocab_offset: LM vocabulary id of bin 0; ``None`` = the last ``n_bins`` ids of the LM
            vocabulary (RT-2 / OpenVLA overwrite the least used tokens). A tiny from-scratch LM
            (no ``backbone.pretrained`` / ``hf_config``) is built with ``n_bins`` extra rows after the
            instruction tokenizer's ids, so bins never share an id with a word.
        max_action_tokens: most tokens (chunk_size x action_dim) one prediction may decode; greedy
            decoding runs one LM pass per token (no KV cache), so this bounds inference cost.
    """

    n_bins: int = 256               # RT-2 / OpenVLA
    vocab_offset: Optional[int] = None
    max_action_tokens: int = 256    # 8 x 8 default chunk = 64 tokens; 256 passes of a tiny LM ~ seconds on CPU

    def __post_init__(self) -> None:
        if int(self.n_bins) != self.n_bins or self.n_bins < 2:
            raise ValueError(f'discrete.n_bins must be an integer >= 2, got {self.n_bins}')
        self.n_bins = int(self.n_bins)
        if self.vocab_offset is not None and (int(self.vocab_offset) != self.vocab_offset or self.vocab_offset < 0):
            raise ValueError(f'discrete.vocab_offset must be None or an integer >= 0, got {self.vocab_offset}')
        if self.max_action_tokens < 1:
            raise ValueError(f'discrete.max_action_tokens must be >= 1, got {self.max_action_tokens}')
# --- end structures ---


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
        structure: how the backbone becomes a policy (RoboVLMs taxonomy, :data:`STRUCTURES`,
            :mod:`vla_policy.models.structures`): ``'one_step_continuous'`` (default), ``'one_step_discrete'``
            (RT-2 action tokens, ``head.name: none``), ``'interleaved'``, ``'policy_head'`` (history head).
        discrete: :class:`DiscreteConfig` for ``one_step_discrete``.
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
    # --- structures ---
    structure: str = 'one_step_continuous'   # today's behaviour; see STRUCTURES
    discrete: DiscreteConfig = field(default_factory=DiscreteConfig)
    # --- end structures ---

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
        if self.state_dim == 0 and ((self.head.use_state and self.head.name != 'none') or self.backbone.use_state):
            raise ValueError('state_dim is 0 but head.use_state/backbone.use_state is set')
        self._check_structure()  # --- structures ---

    # --- structures ---
    def _check_structure(self) -> None:
        """Torch-free structure checks (registry-dependent ones live in ``VLA.__init__``)."""
        if isinstance(self.discrete, dict):
            self.discrete = _strict(DiscreteConfig, self.discrete, 'discrete')
        elif not isinstance(self.discrete, DiscreteConfig):
            raise TypeError(f'VLAConfig.discrete must be DiscreteConfig, got {type(self.discrete).__name__}')
        if self.structure not in STRUCTURES:
            raise ValueError(f'unknown structure {self.structure!r}; valid: {list(STRUCTURES)}')
        if self.structure == 'one_step_discrete':
            if self.head.name != 'none':
                raise ValueError(f"structure 'one_step_discrete' predicts actions with the LM head: head.name "
                                 f"must be 'none', got {self.head.name!r}")
            n_tok = self.chunk.chunk_size * self.action_dim
            if n_tok > self.discrete.max_action_tokens:
                raise ValueError(f'chunk.chunk_size ({self.chunk.chunk_size}) x action_dim ({self.action_dim}) = '
                                 f'{n_tok} action tokens exceeds discrete.max_action_tokens '
                                 f'({self.discrete.max_action_tokens}): largest chunk_size is '
                                 f'{self.discrete.max_action_tokens // self.action_dim}')
        elif self.head.name == 'none':
            raise ValueError(f"head.name 'none' is only valid with structure 'one_step_discrete', "
                             f"got structure {self.structure!r}")
        if self.structure in ('one_step_discrete', 'interleaved') and self.backbone.use_state:
            raise ValueError(f'structure {self.structure!r} builds its own VLM token sequence, which carries no '
                             'state: set backbone.use_state false (head.use_state feeds the head)')

    @property
    def steps_per_pass(self) -> int:
        """History steps one backbone call sees: 1 for ``policy_head`` (one pass per step), else n_obs_steps."""
        return 1 if self.structure == 'policy_head' else self.chunk.n_obs_steps

    @property
    def images_per_pass(self) -> int:
        """Images one backbone call takes: ``len(camera_names)`` for ``policy_head``, else :attr:`n_images`.

        ``interleaved`` feeds all ``n_images`` in one sequence (per step ``[images_t][LRN]``).
        """
        return self.steps_per_pass * len(self.camera_names)
    # --- end structures ---

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
