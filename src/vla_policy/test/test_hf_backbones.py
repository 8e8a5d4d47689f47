"""hf_vlm backbone family: arch registry, contract A members, M-RoPE, freeze / LoRA, pretrained round trip."""
import json

import numpy as np
import pytest
import torch
import yaml

from vla_policy.models import VLA, BackboneConfig, ChunkConfig, VLAConfig
from vla_policy.models.backbones.hf_vlm import (HFVLMBackbone, VLMBackbone, available_hf_archs, register_hf_arch,
                                                tiny_hf_config)
from vla_policy.models.backbones.hf_vlm.arch_qwen_vl import qwen_patchify
from vla_policy.models.config import HF_ARCHS

torch.set_num_threads(1)

ARCHS = ['idefics3', 'paligemma', 'qwen2_vl', 'qwen2_5_vl', 'qwen3_vl']
QWEN = ['qwen2_vl', 'qwen2_5_vl', 'qwen3_vl']
TINY = dict(name='hf_vlm', vocab_size=24, image_size=32, patch_size=8, vision_hidden=32, text_hidden=32,
            vision_layers=1, text_layers=2, num_heads=2)


def tiny_cfg(arch, n_obs=1, **kw):
    return VLAConfig(backbone=BackboneConfig(**dict(TINY, hf_arch=arch, **kw)), chunk=ChunkConfig(n_obs, 4, 2),
                     action_dim=3, state_dim=2)


def batch(cfg, b=2, seed=0, valid=5):
    g = torch.Generator().manual_seed(seed)
    s, L = cfg.backbone.image_size, cfg.max_tokens
    mask = torch.zeros(b, L, dtype=torch.long)
    mask[:, :valid] = 1
    return {'images': torch.rand(b, cfg.n_images, 3, s, s, generator=g),
            'token_ids': torch.randint(3, cfg.backbone.vocab_size, (b, L), generator=g) * mask,
            'attention_mask': mask,
            'state': torch.rand(b, 1, cfg.state_dim, generator=g) * 2 - 1,
            'actions': torch.rand(b, 4, cfg.action_dim, generator=g) * 2 - 1,
            'action_is_pad': torch.zeros(b, 4, dtype=torch.bool)}


def slow_qwen_processor_class():
    """The PIL/numpy Qwen2-VL image processor (transformers 5: ``*Pil``; 4.x: the slow default class)."""
    try:
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
        return Qwen2VLImageProcessorPil
    except ImportError:
        from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
        return Qwen2VLImageProcessor


def trainable(module):
    return {n for n, p in module.named_parameters() if p.requires_grad}


def test_arch_registry_and_config_errors():
    assert set(ARCHS) | {'smolvlm'} <= set(available_hf_archs())
    assert set(available_hf_archs()) <= set(HF_ARCHS)
    with pytest.raises(ValueError, match=r"unknown backbone.hf_arch 'gpt5v'.*qwen2_5_vl.*llava_onevision"):
        BackboneConfig(name='hf_vlm', hf_arch='gpt5v')
    with pytest.raises(ValueError, match=r"backbone.freeze must be one of \['none', 'vision', 'all'\]"):
        BackboneConfig(name='hf_vlm', freeze='text')
    with pytest.raises(ValueError, match='lora_targets'):
        BackboneConfig(name='hf_vlm', lora_r=4, lora_targets=())
    with pytest.raises(ValueError, match='freeze_text_layers'):
        BackboneConfig(name='hf_vlm', freeze_text_layers=-1)
    with pytest.raises(ValueError, match='spatial merge'):
        BackboneConfig(name='hf_vlm', hf_arch='qwen2_vl', image_size=24, patch_size=8, scale_factor=2)
    assert BackboneConfig(name='hf_vlm', freeze_vision=True).freeze == 'vision'  # legacy flag
    # the dispatcher returns the arch's adapter; an unregistered name in a hand-made config is refused
    bb = HFVLMBackbone(tiny_cfg('smolvlm'))
    assert type(bb).__name__ == 'Idefics3Backbone' and bb.is_vlm and isinstance(bb, VLMBackbone)
    assert tiny_hf_config(tiny_cfg('qwen3_vl').backbone, 24).model_type == 'qwen3_vl'
    cfg = tiny_cfg('idefics3')
    cfg.backbone.hf_arch = 'nope'
    with pytest.raises(ValueError, match=r"unknown backbone.hf_arch 'nope'; available: \[.*paligemma"):
        HFVLMBackbone(cfg)
    with pytest.raises(ValueError, match='already registered'):
        register_hf_arch('paligemma')(type('Other', (VLMBackbone,), {}))


@pytest.mark.parametrize('arch', ARCHS)
def test_tiny_arch_contract_shapes_and_training(arch):
    torch.manual_seed(0)
    cfg = tiny_cfg(arch, n_obs=2)   # 2 images per sample
    m = VLA(cfg)
    bb = m.backbone
    P, D = bb.image_tokens_per_image, bb.hidden_size
    assert P == (16 if arch == 'paligemma' else 4)  # (32/8)^2, / 2^2 after pixel shuffle / patch merger
    assert bb.out_dim == D == 32 and bb.vocab_size == 24 and bb.image_processor is None
    b = batch(cfg)
    img = bb.encode_images(b['images'])
    assert img.shape == (2, 2 * P, D)
    txt = bb.embed_tokens(b['token_ids'])
    assert txt.shape == (2, cfg.max_tokens, D) and bb.word_embedding(b['token_ids']).shape == txt.shape
    mask = torch.cat([torch.ones(2, 2 * P, dtype=torch.long), b['attention_mask']], 1)
    hid = bb.fused_forward(torch.cat([img, txt], 1), mask, prefix_len=2 * P)
    assert hid.shape == (2, 2 * P + cfg.max_tokens, D) and torch.isfinite(hid).all()
    assert bb.lm_logits(hid).shape == (2, 2 * P + cfg.max_tokens, 24)
    assert isinstance(bb.vision_tower, torch.nn.Module) and len(bb.text_layers()) == 2
    with torch.no_grad():
        feat = bb(b['images'], b['token_ids'], b['attention_mask'])
        assert feat.shape == (2, D)
        b2 = dict(b, token_ids=b['token_ids'].clone())
        b2['token_ids'][:, 5:] = 7   # padded positions are masked out
        assert torch.allclose(bb(b2['images'], b2['token_ids'], b2['attention_mask']), feat, atol=1e-5)
        assert not torch.allclose(bb(1 - b['images'], b['token_ids'], b['attention_mask']), feat, atol=1e-4)
    with pytest.raises(ValueError, match='expects 2 images per sample, got 1'):
        bb(b['images'][:, :1], b['token_ids'], b['attention_mask'])
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    losses = []
    for step in range(3):
        loss, _ = m.loss(b)
        opt.zero_grad()
        loss.backward()
        if step == 0:
            no_grad = {n for n, p in bb.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0}
            # unused by the feature: the LM head (untied) and SigLIP's pooling head (PaliGemma uses all tokens)
            assert all(n == 'lm_head.weight' or '.vision_tower.head.' in n for n in no_grad), no_grad
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses


def _reference_hf_sequence(bb, cfg, b, act_id):
    """The same sequence through the HF model's own forward (placeholder image tokens + pixel_values)."""
    hf = bb.hf_model
    c = hf.config
    P, n = bb.image_tokens_per_image, cfg.n_images
    bsz = b['images'].shape[0]
    ids = torch.cat([torch.full((bsz, n * P), c.image_token_id), b['token_ids'],
                     torch.full((bsz, 1), act_id)], 1)
    mask = torch.cat([torch.ones(bsz, n * P, dtype=torch.long), b['attention_mask'],
                      torch.ones(bsz, 1, dtype=torch.long)], 1)
    mm = torch.zeros_like(ids, dtype=torch.int)
    mm[:, :n * P] = 1
    pix = (b['images'].reshape(bsz * n, 3, 32, 32) - bb._pix_mean) / bb._pix_std
    vc = c.vision_config
    flat, grid = qwen_patchify(pix, vc.patch_size, vc.spatial_merge_size, vc.temporal_patch_size)
    out = hf.model(input_ids=ids, attention_mask=mask, pixel_values=flat, image_grid_thw=grid,
                   mm_token_type_ids=mm, use_cache=False)
    return out.last_hidden_state[:, -1]


@pytest.mark.parametrize('arch', QWEN)
def test_qwen_matches_hf_forward_with_mrope_positions(arch):
    """Our concatenated sequence + get_rope_index positions == the HF model fed image placeholders."""
    torch.manual_seed(0)
    cfg = tiny_cfg(arch)   # one image: HF's own layout needs <vision_start/end> between images
    d = tiny_hf_config(cfg.backbone, 24).to_dict()
    # placeholder ids inside the vocabulary so the HF forward can embed them
    d.update(image_token_id=20, video_token_id=21, vision_start_token_id=22, vision_end_token_id=23)
    cfg.backbone.hf_config = d
    bb = HFVLMBackbone(cfg).eval()
    act_id = 19
    with torch.no_grad():
        bb.image_scale.fill_(1.0)
        bb.act_embedding.copy_(bb.word_embedding.weight[act_id])
        b = batch(cfg, valid=6)
        b['token_ids'] = b['token_ids'].clamp(max=18) * b['attention_mask']
        b['attention_mask'][1, 4:] = 0   # padding differs across the batch
        ours = bb(b['images'], b['token_ids'], b['attention_mask'])
        ref = _reference_hf_sequence(bb, cfg, b, act_id)
        assert torch.allclose(ours, ref, atol=1e-5), (ours - ref).abs().max()
        # 3-D positions: an image's tokens share t, rows/cols differ; text after an image continues at max + 1
        pos = bb.rope_position_ids([('image', 2), ('text', 3)], 1)
        assert pos.shape == (3, 1, 2 * 4 + 3)
        assert pos[:, 0, :4].tolist() == [[0, 0, 0, 0], [0, 0, 1, 1], [0, 1, 0, 1]]
        assert pos[:, 0, 4:8].tolist() == [[2, 2, 2, 2], [2, 2, 3, 3], [2, 3, 2, 3]]
        assert pos[:, 0, 8:].tolist() == [[4, 5, 6]] * 3
        # 1-D positions (fused_forward default) give a different result: the positions matter
        img = bb.encode_images(b['images'])
        emb = torch.cat([img, bb.embed_tokens(b['token_ids']), bb.act_embedding.expand(2, 1, -1)], 1)
        mask = torch.cat([torch.ones(2, img.shape[1], dtype=torch.long), b['attention_mask'],
                          torch.ones(2, 1, dtype=torch.long)], 1)
        pos = bb.rope_position_ids([('image', 1), ('text', cfg.max_tokens + 1)], 2, mask)
        assert pos[:, 1, 4 + 4:4 + cfg.max_tokens].eq(0).all() and pos[:, 1, -1].tolist() == [6, 6, 6]
        if arch != 'qwen3_vl':   # Qwen3-VL's forward also adds DeepStack features
            assert torch.allclose(bb.fused_forward(emb, mask, position_ids=pos)[:, -1], ours, atol=1e-5)
        assert not torch.allclose(bb.fused_forward(emb, mask)[:, -1], ours, atol=1e-4)


def test_qwen_patchify_matches_the_slow_image_processor():
    cls = slow_qwen_processor_class()
    p = cls(patch_size=8, merge_size=2, temporal_patch_size=2, min_pixels=32 * 32, max_pixels=32 * 32)
    rng = np.random.RandomState(0)
    imgs = [(rng.rand(32, 32, 3) * 255).astype(np.uint8) for _ in range(2)]
    out = p(images=imgs, return_tensors='pt')
    x = torch.tensor(np.stack(imgs)).permute(0, 3, 1, 2).float() / 255
    mean, std = torch.tensor(p.image_mean).view(1, 3, 1, 1), torch.tensor(p.image_std).view(1, 3, 1, 1)
    flat, grid = qwen_patchify((x - mean) / std, 8, 2, 2)
    assert torch.equal(out['image_grid_thw'], grid)
    assert torch.allclose(out['pixel_values'].float(), flat, atol=1e-5)
    with pytest.raises(ValueError, match='multiple of patch_size x spatial_merge_size = 16'):
        qwen_patchify(torch.zeros(1, 3, 24, 24), 8, 2, 2)


@pytest.mark.parametrize('arch', ['idefics3', 'qwen2_vl'])
def test_freeze_modes_freeze_exactly_the_intended_params(arch):
    torch.manual_seed(0)
    full = HFVLMBackbone(tiny_cfg(arch))
    names = trainable(full)
    assert names == {n for n, _ in full.named_parameters()}   # 'none': everything trains
    vis = {n for n in names if n.startswith(('model.vision_model.', 'model.connector.', 'model.visual.'))}
    assert vis
    for kw in (dict(freeze='vision'), dict(freeze_vision=True)):
        assert trainable(HFVLMBackbone(tiny_cfg(arch, **kw))) == names - vis
    assert trainable(HFVLMBackbone(tiny_cfg(arch, freeze='all'))) == {'act_embedding', 'image_scale'}
    bb = HFVLMBackbone(tiny_cfg(arch, freeze_text_layers=1))
    tower = 'text_model' if arch == 'idefics3' else 'language_model'
    layer0 = {n for n in names if n.startswith(f'model.{tower}.layers.0.')}
    assert layer0 and trainable(bb) == names - layer0
    with pytest.raises(ValueError, match='freeze_text_layers \\(3\\) exceeds the 2 language-model layers'):
        HFVLMBackbone(tiny_cfg(arch, freeze_text_layers=3))


@pytest.mark.parametrize('arch', ['paligemma', 'qwen3_vl'])
def test_lora_adds_trainable_adapters_and_freezes_the_base(arch):
    cfg = tiny_cfg(arch)
    torch.manual_seed(0)
    base = HFVLMBackbone(cfg).eval()
    torch.manual_seed(0)
    lcfg = tiny_cfg(arch, lora_r=4, lora_alpha=8)
    m = VLA(lcfg)
    bb = m.backbone
    names = trainable(bb)
    lora = {n for n in names if 'lora_' in n}
    assert lora and names == lora | {'act_embedding', 'image_scale'}
    assert any('.language_model.layers.' in n and 'q_proj' in n for n in lora)
    b = batch(lcfg)
    with torch.no_grad():   # LoRA B starts at zero: same function as the base model
        assert torch.allclose(bb.eval()(b['images'], b['token_ids'], b['attention_mask']),
                              base(b['images'], b['token_ids'], b['attention_mask']), atol=1e-5)
    frozen = {n: p.detach().clone() for n, p in bb.named_parameters() if not p.requires_grad}
    lora0 = {n: p.detach().clone() for n, p in bb.named_parameters() if n in lora}
    opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=1e-2)
    m.train()
    for _ in range(2):
        loss, _ = m.loss(b)
        opt.zero_grad()
        loss.backward()
        opt.step()
    params = dict(bb.named_parameters())
    assert all(torch.equal(params[n], v) for n, v in frozen.items())
    assert any(not torch.equal(params[n], v) for n, v in lora0.items())
    # a checkpoint config rebuilds the same adapter layout
    assert set(VLA(VLAConfig.from_dict(json.loads(json.dumps(lcfg.to_dict())))).state_dict()) == set(m.state_dict())
    # freeze 'all' keeps the adapters training; 'vision' also freezes the adapters inside the vision tower
    assert trainable(HFVLMBackbone(tiny_cfg(arch, lora_r=4, freeze='all'))) == names
    vis_lora = {n for n in lora if n.startswith(('model.vision_tower.', 'model.visual.'))}
    assert trainable(HFVLMBackbone(tiny_cfg(arch, lora_r=4, freeze='vision'))) == names - vis_lora
    with pytest.raises(ValueError, match="lora_targets \\['nothing_here'\\] matched no module"):
        HFVLMBackbone(tiny_cfg(arch, lora_r=2, lora_targets=('nothing_here',)))
    with pytest.raises(ValueError, match='LoRA adapters'):
        bb.save_pretrained('unused')


def _tiny_hf_tokenizer(directory, vocab_size):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    words = ['<pad>', '<unk>', 'pick', 'the', 'red', 'cube', 'place', 'blue', 'on', 'left']
    vocab = {w: i for i, w in enumerate(words)}
    vocab.update({f'w{i}': i for i in range(len(words), vocab_size)})
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token='<unk>'))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token='<pad>', unk_token='<unk>')
    fast.save_pretrained(str(directory))
    return fast


@pytest.mark.parametrize('arch', ARCHS)
def test_pretrained_dir_round_trip_identical_outputs(arch, tmp_path):
    from vla_policy.models.tokenizer import HFTokenizer, load_tokenizer
    torch.manual_seed(0)
    cfg = tiny_cfg(arch)
    ref = HFVLMBackbone(cfg).eval()
    hf_dir = tmp_path / 'hf'
    ref.save_pretrained(str(hf_dir))
    _tiny_hf_tokenizer(hf_dir, 24)
    tok = HFTokenizer(str(hf_dir), max_len=cfg.max_tokens)
    assert tok.vocab_size == 24
    tok.save(tmp_path / 'ckpt')
    tok2 = load_tokenizer(tmp_path / 'ckpt')
    ids, mask = tok2.encode_batch(['pick the red cube', 'place blue cube on the left'])
    assert ids[0, :4].tolist() == [2, 3, 4, 5] and mask.sum(1).tolist() == [4, 6]
    text = (f"model:\n  backbone:\n    name: hf_vlm\n    hf_arch: {arch}\n    image_size: 32\n"
            f"    pretrained: {hf_dir}\n  chunk: {{n_obs_steps: 1, chunk_size: 4, n_action_steps: 2}}\n"
            f"  action_dim: 3\n  state_dim: 2\n")
    lcfg = VLAConfig.from_dict(yaml.safe_load(text)['model'])
    bb = HFVLMBackbone(lcfg).eval()
    assert lcfg.backbone.hf_config['model_type'] == ref.hf_model.config.model_type
    assert bb.image_scale.item() == 1.0   # pretrained features are used as they are
    ref_sd, sd = ref.state_dict(), bb.state_dict()
    assert set(ref_sd) == set(sd)
    assert all(torch.equal(ref_sd[k], sd[k]) for k in sd if k not in ('act_embedding', 'image_scale'))
    images = torch.rand(2, 1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    t_ids, t_mask = torch.from_numpy(ids), torch.from_numpy(mask)
    with torch.no_grad():
        bb.act_embedding.copy_(ref.act_embedding)
        bb.image_scale.copy_(ref.image_scale)
        assert torch.equal(bb(images, t_ids, t_mask), ref(images, t_ids, t_mask))
        e = bb.embed_tokens(t_ids)
        assert torch.equal(bb.lm_logits(bb.fused_forward(e, t_mask)), ref.lm_logits(ref.fused_forward(e, t_mask)))
    # the checkpoint config (hf_config filled in) rebuilds offline without the weights directory
    cfg3 = VLAConfig.from_dict(json.loads(json.dumps(lcfg.to_dict())))
    cfg3.backbone.pretrained = str(tmp_path / 'gone')
    assert {k: v.shape for k, v in HFVLMBackbone(cfg3).state_dict().items()} == {k: v.shape for k, v in sd.items()}


def test_pretrained_dir_of_another_arch_is_refused(tmp_path):
    HFVLMBackbone(tiny_cfg('qwen2_vl')).save_pretrained(str(tmp_path / 'q'))
    cfg = tiny_cfg('paligemma')
    cfg.backbone.pretrained = str(tmp_path / 'q')
    with pytest.raises(ValueError, match=r"is a 'qwen2_vl' model but backbone.hf_arch 'paligemma'"):
        HFVLMBackbone(cfg)
    cfg = tiny_cfg('idefics3')
    cfg.backbone.hf_config = tiny_hf_config(tiny_cfg('qwen3_vl').backbone, 24).to_dict()
    with pytest.raises(ValueError, match=r"model_type 'qwen3_vl' but backbone.hf_arch.*idefics3"):
        HFVLMBackbone(cfg)


def test_image_processor_of_a_pretrained_dir_is_the_slow_one(tmp_path):
    cls = slow_qwen_processor_class()
    d = tmp_path / 'q'
    HFVLMBackbone(tiny_cfg('qwen2_vl')).save_pretrained(str(d))
    cls(patch_size=8, merge_size=2, min_pixels=32 * 32, max_pixels=32 * 32).save_pretrained(str(d))
    cfg = tiny_cfg('qwen2_vl')
    cfg.backbone.pretrained = str(d)
    proc = HFVLMBackbone(cfg).image_processor
    assert type(proc) is slow_qwen_processor_class() and proc.patch_size == 8


def test_checkpoint_without_lm_head_still_loads():
    """Checkpoints written before the LM head was kept hold only the base model + act/scale."""
    torch.manual_seed(0)
    cfg = tiny_cfg('paligemma')   # Gemma ties the LM head to the embeddings
    old = {k: v for k, v in HFVLMBackbone(cfg).state_dict().items() if k != 'lm_head.weight'}
    bb = HFVLMBackbone(cfg)
    bb.load_state_dict(old, strict=True)
    assert torch.equal(bb.lm_head.weight, old['model.language_model.embed_tokens.weight'])
    cfg = tiny_cfg('idefics3')    # untied: the head keeps its init
    old = {k: v for k, v in HFVLMBackbone(cfg).state_dict().items() if k != 'lm_head.weight'}
    HFVLMBackbone(cfg).load_state_dict(old, strict=True)


@pytest.mark.parametrize('arch', ['qwen2_5_vl', 'idefics3'])
def test_checkpoint_round_trip_with_lora_and_partial_freeze(arch, tmp_path):
    from vla_policy.checkpoint import load_checkpoint, save_checkpoint
    from vla_policy.models import WordTokenizer
    torch.manual_seed(0)
    cfg = tiny_cfg(arch, lora_r=2, freeze_text_layers=1)
    tok = WordTokenizer.build(['pick the red cube'], max_len=cfg.max_tokens)
    model = VLA(cfg)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    b = batch(cfg)
    loss, _ = model.loss(b)
    loss.backward()
    opt.step()   # adapters move away from their zero init
    model.eval()
    save_checkpoint(tmp_path / 'ck', model, cfg, {}, tok)
    m2, c2, _, _, _ = load_checkpoint(tmp_path / 'ck')
    assert c2.backbone.lora_r == 2 and c2.backbone.freeze_text_layers == 1
    with torch.no_grad():
        assert torch.equal(m2(b), model(b))
