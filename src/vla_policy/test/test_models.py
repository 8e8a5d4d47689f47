"""Model config, registry, tokenizer, backbones (film_cnn, hf_vlm Idefics3 / PaliGemma) and head."""
import pytest
import torch
from torch import nn

from vla_policy.models import (VLA, BackboneConfig, ChunkConfig, HeadConfig, VLAConfig, WordTokenizer,
                               available_backbones, available_heads, make_backbone, register_backbone)
from vla_policy.models.backbones.hf_vlm import HFVLMBackbone

torch.set_num_threads(1)


def batch_for(cfg, b=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    s, L = cfg.backbone.image_size, cfg.max_tokens
    mask = torch.ones(b, L, dtype=torch.long)
    mask[:, 5:] = 0
    return {'images': torch.rand(b, cfg.n_images, 3, s, s, generator=g),
            'token_ids': torch.randint(3, cfg.backbone.vocab_size, (b, L), generator=g) * mask,
            'attention_mask': mask,
            'state': torch.rand(b, cfg.chunk.n_obs_steps, cfg.state_dim, generator=g) * 2 - 1,
            'actions': torch.rand(b, cfg.chunk.chunk_size, cfg.action_dim, generator=g) * 2 - 1,
            'action_is_pad': torch.zeros(b, cfg.chunk.chunk_size, dtype=torch.bool)}


def test_config_round_trip_and_strictness():
    cfg = VLAConfig(backbone=BackboneConfig(vocab_size=10), chunk=ChunkConfig(2, 6, 3))
    d = cfg.to_dict()
    assert VLAConfig.from_dict(d) == cfg
    with pytest.raises(ValueError, match='bogus'):
        VLAConfig.from_dict(dict(d, bogus=1))
    with pytest.raises(ValueError, match='typo_key'):
        VLAConfig.from_dict(dict(d, head=dict(d['head'], typo_key=3)))
    with pytest.raises(ValueError, match='n_action_steps'):
        ChunkConfig(1, 4, 5)
    with pytest.raises(ValueError, match='divisible by backbone.patch_size'):
        BackboneConfig(name='hf_vlm', image_size=60, patch_size=8)
    with pytest.raises(ValueError, match='scale_factor'):
        BackboneConfig(name='hf_vlm', image_size=24, patch_size=8, scale_factor=2)
    with pytest.raises(ValueError, match='head.loss'):
        HeadConfig(loss='huber')


def test_registry_and_unknown_names():
    assert {'film_cnn', 'hf_vlm'} <= set(available_backbones())
    assert 'mlp' in available_heads()
    with pytest.raises(KeyError, match="unknown backbone 'nope'.*film_cnn"):
        make_backbone(VLAConfig(backbone=BackboneConfig(name='nope')))

    @register_backbone('test_linear')
    class Lin(nn.Module):  # a new family is just a registered class
        def __init__(self, cfg):
            super().__init__()
            self.out_dim = 4
            self.lin = nn.Linear(3, 4)

        def forward(self, images, token_ids, attention_mask, state=None):
            return self.lin(images.mean(dim=(1, 3, 4)))

    cfg = VLAConfig(backbone=BackboneConfig(name='test_linear', vocab_size=10))
    out = VLA(cfg)(batch_for(cfg))
    assert out.shape == (3, 8, 8)
    with pytest.raises(ValueError, match='already registered'):
        register_backbone('film_cnn')(Lin)


def test_tokenizer_deterministic_and_saved(tmp_path):
    tok = WordTokenizer.build(['Pick the RED cube', 'reach the blue-cube!'], max_len=6)
    assert tok.vocab[:3] == ['<pad>', '<unk>', '<act>']
    assert tok.vocab[3:] == sorted(tok.vocab[3:])
    ids, mask = tok.encode('pick the green cube')
    assert ids.tolist() == [tok.index['pick'], tok.index['the'], tok.unk_id, tok.index['cube'], 0, 0]
    assert mask.tolist() == [1, 1, 1, 1, 0, 0]
    tok.save(tmp_path)
    from vla_policy.models import load_tokenizer
    tok2 = load_tokenizer(tmp_path)
    assert tok2.vocab == tok.vocab and tok2.max_len == 6
    with pytest.raises(FileNotFoundError, match='tokenizer.json'):
        load_tokenizer(tmp_path / 'nothing')


def test_film_cnn_size_shapes_and_language_dependence():
    cfg = VLAConfig(backbone=BackboneConfig(vocab_size=20), chunk=ChunkConfig(2, 8, 4))
    m = VLA(cfg)
    assert 2e5 <= m.num_parameters() <= 5e5
    b = batch_for(cfg)
    out = m(b)
    assert out.shape == (3, 8, 8)
    # Train FiLM a few steps so the instruction matters, then change only the instruction.
    opt = torch.optim.Adam(m.parameters(), 1e-2)
    for _ in range(5):
        loss, info = m.loss(b)
        opt.zero_grad(); loss.backward(); opt.step()
    assert set(info) == {'l1'}
    b2 = dict(b, token_ids=(b['token_ids'] + 1) % 20 * b['attention_mask'])
    with torch.no_grad():
        assert not torch.allclose(m(b), m(b2))
    with pytest.raises(ValueError, match=r'images must be \(B, T, 3, 64, 64\)'):
        m(dict(b, images=b['images'][:, :, :, :32]))
    with pytest.raises(KeyError, match='state'):
        m({k: v for k, v in b.items() if k != 'state'})


def test_padding_mask_respected_in_loss():
    cfg = VLAConfig(backbone=BackboneConfig(vocab_size=20), head=HeadConfig(loss='mse'))
    m = VLA(cfg).eval()
    b = batch_for(cfg)
    b['action_is_pad'][:, 4:] = True
    l1, _ = m.loss(b)
    b2 = dict(b, actions=b['actions'].clone())
    b2['actions'][:, 4:] += 100.0  # padded targets must not matter
    l2, info = m.loss(b2)
    assert torch.equal(l1, l2) and 'mse' in info
    with torch.no_grad():
        pred = m(b)
    ref = ((pred - b['actions'])[:, :4] ** 2).mean()
    assert torch.allclose(l1, ref)


@pytest.mark.parametrize('arch,seq', [('idefics3', 16), ('paligemma', 64)])
def test_hf_vlm_tiny(arch, seq):
    cfg = VLAConfig(backbone=BackboneConfig(name='hf_vlm', hf_arch=arch, vocab_size=20, image_size=64, patch_size=8,
                                            vision_layers=2, text_layers=2),
                    chunk=ChunkConfig(1, 4, 2), action_dim=3, state_dim=2)
    m = VLA(cfg).eval()
    bb = m.backbone
    assert bb.image_seq_len == seq  # idefics3: (64/8)^2 / 2^2; paligemma: (64/8)^2
    b = batch_for(cfg)
    with torch.no_grad():
        out = m(b)
        # a mid-grey image normalises to exactly 0; it must not be dropped (Idefics3 padding rule)
        grey = dict(b, images=torch.full_like(b['images'], 0.5))
        assert m(grey).shape == (3, 4, 3)
        # padded instruction positions are masked out: changing them does not change the output
        b2 = dict(b, token_ids=b['token_ids'].clone())
        b2['token_ids'][:, 6:] = 7
        assert torch.allclose(m(b2), out, atol=1e-5)
        # the image changes the feature
        assert not torch.allclose(m(dict(b, images=1 - b['images'])), out)
    assert out.shape == (3, 4, 3)
    loss, _ = m.loss(b)
    loss.backward()
    assert bb.act_embedding.grad is not None and bb.act_embedding.grad.abs().sum() > 0
    vis = bb.model.vision_model if arch == 'idefics3' else bb.model.vision_tower
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in vis.parameters())


def test_hf_vlm_from_pretrained_local_dir(tmp_path):
    cfg = VLAConfig(backbone=BackboneConfig(name='hf_vlm', vocab_size=20, image_size=32, vision_hidden=64,
                                            text_hidden=64), chunk=ChunkConfig(1, 4, 2), action_dim=2, state_dim=2)
    ref = HFVLMBackbone(cfg)
    ref.model.save_pretrained(str(tmp_path / 'hf'))
    cfg2 = VLAConfig.from_dict(dict(cfg.to_dict(), backbone=dict(cfg.to_dict()['backbone'], pretrained=str(tmp_path / 'hf'),
                                                                  freeze_vision=True)))
    bb = HFVLMBackbone(cfg2)
    assert cfg2.backbone.hf_config is not None and cfg2.backbone.hf_config['model_type'] == 'idefics3'
    for (k, v), (k2, v2) in zip(ref.model.state_dict().items(), bb.model.state_dict().items()):
        assert k == k2 and torch.equal(v, v2), k
    assert not any(p.requires_grad for p in bb.model.vision_model.parameters())
    bad = VLAConfig.from_dict(dict(cfg2.to_dict(), backbone=dict(cfg2.to_dict()['backbone'], hf_config=None, image_size=64)))
    with pytest.raises(ValueError, match='expects 32 px'):
        HFVLMBackbone(bad)


def test_hf_config_makes_checkpoint_self_contained(tmp_path):
    import json
    cfg = VLAConfig(backbone=BackboneConfig(name='hf_vlm', hf_arch='paligemma', vocab_size=20, image_size=32,
                                            vision_hidden=64, text_hidden=64), chunk=ChunkConfig(1, 4, 2),
                    action_dim=2, state_dim=2)
    ref = HFVLMBackbone(cfg)
    ref.model.save_pretrained(str(tmp_path / 'hf'))
    d = cfg.to_dict()
    d['backbone']['pretrained'] = str(tmp_path / 'hf')
    cfg2 = VLAConfig.from_dict(d)
    HFVLMBackbone(cfg2)  # fills hf_config from the pretrained model
    # the config survives JSON and rebuilds the same architecture without the weights directory
    cfg3 = VLAConfig.from_dict(json.loads(json.dumps(cfg2.to_dict())))
    cfg3.backbone.pretrained = str(tmp_path / 'gone')
    bb = HFVLMBackbone(cfg3)
    assert {k: v.shape for k, v in bb.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}


def test_flow_head_registered_masks_padding_and_samples_deterministically():
    assert 'flow' in available_heads()
    cfg = VLAConfig(backbone=BackboneConfig(vocab_size=20), head=HeadConfig(name='flow', hidden=64))
    m = VLA(cfg).eval()
    b = batch_for(cfg)
    b['action_is_pad'][:, 5:] = True
    torch.manual_seed(0)
    l1, info = m.loss(b)
    velocity = m.head.velocity

    def off_on_padded_rows(x, tau, feature, state):   # the head's output on padded rows must not matter
        v = velocity(x, tau, feature, state).clone()
        v[:, 5:] += 100.0
        return v

    m.head.velocity = off_on_padded_rows
    torch.manual_seed(0)
    l2, _ = m.loss(b)
    assert torch.equal(l1, l2) and set(info) == {'flow_mse'} and l1 > 0
    b['action_is_pad'][:] = False
    torch.manual_seed(0)
    assert m.loss(b)[0] > 100.0   # ... and does once those rows count
    del m.head.velocity
    with torch.no_grad():
        s1 = m(b, generator=torch.Generator().manual_seed(2))
        s2 = m(b, generator=torch.Generator().manual_seed(2))
    assert s1.shape == (3, 8, 8) and torch.equal(s1, s2)
    with pytest.raises(ValueError, match='head.num_steps'):
        HeadConfig(name='flow', num_steps=0)
    with pytest.raises(ValueError, match='head.time_dim'):
        HeadConfig(name='flow', time_dim=3)
